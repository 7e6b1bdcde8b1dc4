"""jumper-proxy: a Jupyter kernel for performance engineering that stands in front of a real kernel.

The proxy speaks the Jupyter wire protocol to the frontend, starts the real (upstream) kernel,
relays every message both ways, and intercepts ``execute_request`` to monitor each cell, answer
its own ``%%magics`` and run instrumented cells under Score-P.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
