"""Where the data that ships with languini lies: the compute classes and lm-eval task templates.

A checkout keeps them at its top (compute_classes/, eval/); a wheel carries them inside the
package (pyproject maps them to languini/compute_classes and languini/eval, so nothing named
`eval` lands at the top of site-packages). One lookup serves an installed wheel, an editable
install and a checkout run with only PYTHONPATH set.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(folder: str) -> Path:
    """The shipped `folder`: in the installed package if it is there, else in the checkout."""
    packaged = resources.files("languini") / folder
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / folder
