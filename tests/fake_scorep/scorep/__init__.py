"""FAKE Score-P Python bindings, for tests on machines without Score-P. Not the real ``scorep``.

It honours the contract the proxy relies on, ``python -m scorep [options] script [args]`` and
``scorep.instrumenter.disable()`` / ``enable()``, and measures nothing. Instead it records what
it was given into the experiment directory (``SCOREP_EXPERIMENT_DIRECTORY``, else a new
``scorep-YYYYMMDD_HHMM_<n>`` in the working directory, like Score-P):

* ``fake_scorep.json``: the options, the program and its arguments, the ``SCOREP_*`` variables
  and whether ``LD_PRELOAD`` / ``SCOREP_PYTHON_BINDINGS_INITIALISED`` were set on entry;
* ``fake_scorep_regions.json``: ``"file:function"`` of every Python function called while the
  fake instrumentation was on (a ``sys.setprofile`` hook), written when the program ends.
"""
