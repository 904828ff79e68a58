"""Executes a notebook top to bottom with nbclient (Debian's python3-nbclient) and writes it with
its outputs, errors included (the caller looks for them). Used by tests/notebook_test.ts, and to
refresh the outputs committed with notebooks/tour.ipynb:

    /usr/bin/python3 tests/run_notebook.py notebooks/tour.ipynb notebooks/tour.ipynb

The kernel starts in the notebook's folder, as in Jupyter and VS Code. Deno's kernel (2.9) may
send a cell's last outputs (a stream, a display, the execute_result) just after the cell's idle
status, which nbclient would drop: after idle, this runner keeps reading the cell's messages
until the kernel has been quiet for SETTLE seconds.
"""

import argparse
import os
import queue

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete
from nbclient.util import ensure_async

SETTLE = 0.5


class PatientClient(NotebookClient):
    """A NotebookClient that also takes the outputs a cell's kernel sends after its idle status."""

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)
        while True:
            try:
                msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=SETTLE))
            except queue.Empty:
                return
            if msg["parent_header"].get("msg_id") == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("--kernel", help="kernel name (default: the notebook's)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()

    nb = nbformat.read(args.notebook, as_version=4)
    client = PatientClient(
        nb,
        timeout=args.timeout,
        kernel_name=args.kernel or nb.metadata.get("kernelspec", {}).get("name", ""),
        allow_errors=True,
        record_timing=False,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(args.notebook))}},
    )
    client.execute()
    nbformat.write(nb, args.output)


if __name__ == "__main__":
    main()
