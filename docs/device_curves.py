"""The README's device figures.

    python docs/device_curves.py [OUT.png]      (default docs/device-curves.png)
    python docs/device_curves.py --levels OUT.png RUN.h5 [RUN.h5 ...]

The first draws conductance against pulse count of each pulsed device model (the ``table``
model drawn from docs/example-device.csv, a synthetic example of the format). ``--levels``
draws test and train error against the level count from run files (their last finished
epoch; a run on ideal devices is the dashed line) and prints the table of the figure.
"""
import sys
from pathlib import Path

from fastres.report import device_curves_figure, levels_figure, levels_table

if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--levels":
        out, runs = sys.argv[2], sys.argv[3:]
        print("| levels | epochs | test error | train error | pulses, last epoch | run |")
        print("|---|---|---|---|---|---|")
        for path, levels, epochs, test, train, pulses in levels_table(runs):
            print(f"| {levels or 'ideal'} | {epochs} | {100 * test:.2f} % | {100 * train:.2f} % | "
                  f"{pulses / 1e6:.2f} M | {Path(path).name} |")
        print(levels_figure(runs, out))
    else:
        out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("device-curves.png")
        table = Path(__file__).with_name("example-device.csv")  # synthetic, the table format's example
        print(device_curves_figure(out, table=table))
