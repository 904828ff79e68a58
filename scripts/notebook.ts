/**
 * `deno task notebook`: says how to open the notebook tour, `notebooks/tour.ipynb`, in Deno's
 * Jupyter kernel. It only prints; it needs no permission.
 *
 * @module
 */

/** The instructions, as printed. */
export const HOW_TO_OPEN = `The notebook tour: notebooks/tour.ipynb
(the tokenizer, the shipped model, one forward pass, next-character candidates, attention heads,
a gradient checked by finite differences, a minute of training, sampling settings)

It reads as it is on a code host, with the outputs of a real run. To run it yourself:

1. Register Deno's Jupyter kernel, once:
     deno jupyter --install
2. Open the notebook, either
   - in Jupyter:  jupyter lab notebooks/tour.ipynb   (or jupyter notebook), or
   - in VS Code, with the Jupyter extension: open notebooks/tour.ipynb and choose the "Deno"
     kernel.
3. Run the cells from the top. The kernel starts in notebooks/, so the cells import ../mod.ts;
   it runs with every permission, and the training cell trains for about a minute.

The training cell uses data/tinyshakespeare.txt when \`deno task data\` has fetched it, and a
short text of its own otherwise.
`;

if (import.meta.main) console.log(HOW_TO_OPEN);
