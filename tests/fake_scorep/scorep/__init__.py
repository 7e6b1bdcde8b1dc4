"""FAKE Score-P Python bindings, for the fast unit tests only (the end-to-end tests run the real
Score-P). Not the real ``scorep``.

It honours the contract the proxy relies on, ``python -m scorep [options] script [args]`` and
``scorep.instrumenter.disable()`` / ``enable()``, and measures nothing. Instead it records what
it was given into the experiment directory (``SCOREP_EXPERIMENT_DIRECTORY``, else a new
``scorep-YYYYMMDD_HHMM_<n>`` in the working directory, like Score-P):

* ``fake_scorep.json``: the options, the program and its arguments, the ``SCOREP_*`` variables
  and whether ``LD_PRELOAD`` / ``SCOREP_PYTHON_BINDINGS_INITIALISED`` were set on entry;
* ``fake_scorep_regions.json``: ``"file:function"`` and ``"module:function"`` (the real
  bindings' region names) of every Python function called while the fake instrumentation was
  on (a ``sys.setprofile`` hook), and ``user:NAME`` for user regions, written when the program
  ends.

``bin/scorep-config`` is a FAKE too: on PATH, it makes the proxy take Score-P as installed.
"""
