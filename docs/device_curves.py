"""The README's device figure: conductance against pulse count of each pulsed device model
(the ``table`` model drawn from docs/example-device.csv, a synthetic example of the format).

    python docs/device_curves.py [OUT.png]      (default docs/device-curves.png)
"""
import sys
from pathlib import Path

from fastres.report import device_curves_figure

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("device-curves.png")
    table = Path(__file__).with_name("example-device.csv")  # synthetic, the table format's example
    print(device_curves_figure(out, table=table))
