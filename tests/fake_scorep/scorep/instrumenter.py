"""FAKE ``scorep.instrumenter``: ``disable``/``enable`` switch a profile hook that records the
Python functions called while it is on (see the package docstring). Not the real bindings."""

import functools
import sys

_regions = set()
_registered = False


def _hook(frame, event, arg):
    if event == "call" and frame.f_code.co_filename != __file__:  # the bindings skip their own
        code = frame.f_code
        _regions.add(f"{code.co_filename}:{code.co_name}")
        _regions.add(f"{frame.f_globals.get('__name__')}:{code.co_name}")


def register():
    global _registered
    sys.setprofile(_hook)
    _registered = True


def unregister():
    global _registered
    sys.setprofile(None)
    _registered = False


def get_registered():
    return _registered


def regions():
    """The ``"file:function"`` names recorded so far, sorted (user regions as ``user:NAME``)."""
    return sorted(_regions)


class _Instrumenter:
    """FAKE ``get_instrumenter()``: user regions are recorded by name."""

    def region_begin(self, module_name, function_name, file_name, line_number, code=None):
        _regions.add(f"{module_name}:{function_name}")

    def region_end(self, module_name, function_name, code=None):
        pass


def get_instrumenter():
    return _Instrumenter()


class _Switch:
    """A context manager (and decorator) that turns the hook ``on`` or off for its body."""

    on = False

    def __init__(self, region_name=""):
        self.region_name = region_name
        self._was = False

    def __enter__(self):
        self._was = _registered
        if self.on and not self._was:
            register()
        elif not self.on and self._was:
            unregister()
        return self

    def __exit__(self, *exc_info):
        if self._was and not _registered:
            register()
        elif not self._was and _registered:
            unregister()
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def inner(*args, **kwargs):
            with type(self)(self.region_name):
                return func(*args, **kwargs)

        return inner


class disable(_Switch):
    """``with scorep.instrumenter.disable():`` runs its body without instrumentation."""

    on = False


class enable(_Switch):
    """``with scorep.instrumenter.enable():`` runs its body with instrumentation."""

    on = True
