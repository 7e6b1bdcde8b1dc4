"""Score-P cells: a child interpreter of the kernel's Python runs the cell under Score-P, with
the notebook's state handed over through shared memory (or files) and brought back.

:func:`run_scorep_cell` runs one cell; :mod:`.launcher` builds and runs the child command;
:mod:`.faststart` prepares the bindings' init library once per configuration; :mod:`.notes`
turns what Score-P reports into clear lines; :mod:`.workspace` is the proxy's private Score-P
directory; :mod:`.handover` and :mod:`.transport` are the state transfer (shipped as source
text to the kernel and the child by :mod:`.bootstrap`); :mod:`.runner` is the script the child
runs.
"""

from jumper_proxy.child.bootstrap import RunHidden
from jumper_proxy.child.faststart import InitCache
from jumper_proxy.child.launcher import build_child_command, build_child_env, find_experiment_dir
from jumper_proxy.child.session import (
    CellCode,
    HandoverSettings,
    ScorepCellResult,
    run_scorep_cell,
)

__all__ = [
    "CellCode",
    "HandoverSettings",
    "InitCache",
    "RunHidden",
    "ScorepCellResult",
    "build_child_command",
    "build_child_env",
    "find_experiment_dir",
    "run_scorep_cell",
]
