#!/usr/bin/env bash
# What a lent GPU machine lacks, gathered here into ignored folders that `run` carries
# (see README, "Measuring on a GPU"): the Vulkan and EGL loaders as Debian packages (the machine
# has NVIDIA's driver but may have no loader), Deno compressed (its 96 MB binary would not fit
# the 64 MiB a call carries), and the corpus (../shared stays behind). Writes .device/ and data/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device/gl /tmp/baregpt-apt/partial
apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/baregpt-apt)
apt-get "${apt[@]}" update -qq
rm -f .device/gl/*.deb
(cd .device/gl && apt-get "${apt[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
deno_binary=$(deno eval --quiet 'console.log(Deno.execPath())')
xz -6 -T0 -c "$deno_binary" >.device/deno.xz
deno task data
du -sh .device data
