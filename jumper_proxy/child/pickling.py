"""A namespace pickled into blobs of a transport store, and loaded back: :func:`dump`, :func:`load`.

One pickle (protocol 5) holds all values, so objects shared between names stay shared. Buffers
that pickle hands out-of-band (numpy arrays, and here also large ``bytes``/``bytearray``) are
not copied into the stream: a large one gets a blob of its own (which can be mapped instead of
read when loading), small ones share the main blob with the stream. A large buffer that is a
whole blob loaded zero-copy (the child's view of a kernel array, changed in place or not)
travels back as that blob's name, without a copy. Values the marshaller cannot serialize are
found name by name, left out and reported.

dill's and cloudpickle's picklers are adjusted so that

* a notebook function's globals load as the *live* target namespace, not a copy of the globals
  it used (dill does this by reference to ``__main__.__dict__``, see :func:`as_main_module`;
  cloudpickle's reduction is rebound here);
* objects listed in ``references`` (notebook functions and classes the loading side already
  holds) travel as a path into the target namespace instead of by value.

Standard library plus the chosen marshaller; shipped as source text with :mod:`.handover`.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

from . import transport

MARSHALLERS = ("dill", "cloudpickle")
PROTOCOL = 5
#: out-of-band buffers at least this large get a blob of their own (zero-copy in memory mode)
OWN_BLOB = 1 << 20
#: ``bytes``/``bytearray`` at least this large travel out-of-band
LARGE_BYTES = 1 << 16
_ALIGN = 64

#: the namespaces unpickling currently resolves notebook objects against (innermost last)
_TARGETS: list[dict[str, Any]] = []


#: where a zero-copy loaded blob is mapped: address → (store location, blob name, size)
Mapped = dict[int, tuple[str, str, int]]


def dump(
    values: dict[str, Any],
    marshaller: str,
    namespace: dict[str, Any],
    references: dict[int, tuple[str, ...]],
    store: transport.Store,
    tag: str,
    reuse: Mapped | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Pickle ``values`` (one pickle) into blobs of ``store``; the data manifest and the names
    left out because they cannot be serialized.

    A large buffer that is exactly a blob of ``reuse`` (loaded zero-copy: an array the cell
    kept, changed in place or not) is not copied: the manifest names that blob."""
    payload = {name: _Bytes(v) if _is_large_bytes(v) else v for name, v in values.items()}
    if not payload:  # nothing to pickle: plain pickle, no marshaller to import on either side
        stream = memoryview(pickle.dumps({}, protocol=PROTOCOL))
        return _write(store, tag, "pickle", stream, [], {}), []
    skipped: list[str] = []
    try:
        stream, buffers = _pickle(payload, marshaller, namespace, references)
    except Exception:
        skipped = [
            name
            for name, value in payload.items()
            if not _picklable({name: value}, marshaller, namespace, references)
        ]
        if not skipped:
            raise
        payload = {name: v for name, v in payload.items() if name not in skipped}
        stream, buffers = _pickle(payload, marshaller, namespace, references)
    try:
        return _write(store, tag, marshaller, stream, buffers, reuse or {}), skipped
    except BaseException:
        for name in store.created:
            store.remove(name)
        raise


def load(
    data: dict[str, Any],
    namespace: dict[str, Any],
    *,
    zero_copy: bool,
    mapped: Mapped | None = None,
) -> dict[str, Any]:
    """The values of a data manifest; notebook references resolve against ``namespace``.

    With ``zero_copy`` the blobs are mapped, not read; the mappings of blobs that hold one
    buffer each are recorded in ``mapped`` (for :func:`dump`'s ``reuse``)."""
    store = transport.Store(data["mode"], data["where"])
    main_name, main_size, stream_size = data["main"]
    main = store.open(main_name, main_size, zero_copy=zero_copy)
    buffers = []
    for name, offset, size in data["buffers"]:
        if name is None:
            buffers.append(main[offset : offset + size])
            continue
        view = store.open(name, size, zero_copy=zero_copy)
        address = _address(view)
        if mapped is not None and zero_copy and address:
            mapped[address] = (store.where, name, size)
        buffers.append(view)
    stream = main[:stream_size]
    _TARGETS.append(namespace)
    try:
        with as_main_module(namespace):
            if data["marshaller"] == "dill":
                import dill

                payload = dill.Unpickler(io.BytesIO(stream), buffers=buffers).load()
            else:
                payload = pickle.loads(stream, buffers=buffers)
    finally:
        _TARGETS.pop()
    if not isinstance(payload, dict):
        raise pickle.UnpicklingError("the handover does not hold a namespace")
    return payload


def _pickle(
    payload: dict[str, Any],
    marshaller: str,
    namespace: dict[str, Any],
    references: dict[int, tuple[str, ...]],
) -> tuple[memoryview, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    # dill: by value, globals not copied, whatever the user set in dill.settings
    options = {"byref": False, "recurse": False} if marshaller == "dill" else {}
    pickler = _pickler_class(marshaller)(
        stream, protocol=PROTOCOL, buffer_callback=buffers.append, **options
    )
    pickler.jp_references = references
    pickler.jp_namespace = namespace
    pickler.dump(payload)
    return stream.getbuffer(), buffers


def _picklable(
    payload: dict[str, Any],
    marshaller: str,
    namespace: dict[str, Any],
    references: dict[int, tuple[str, ...]],
) -> bool:
    try:
        _pickle(payload, marshaller, namespace, references)
    except Exception:
        return False
    return True


def _write(
    store: transport.Store,
    tag: str,
    marshaller: str,
    stream: memoryview,
    buffers: list[pickle.PickleBuffer],
    reuse: Mapped,
) -> dict[str, Any]:
    """Large buffers get a blob each (or name the blob they are); the stream and the small
    buffers share the main blob."""
    parts = [(0, stream)]
    end = stream.nbytes
    table: list[tuple[str | None, int, int]] = []
    reused: set[str] = set()
    for index, buffer in enumerate(buffers):
        raw = _raw(buffer)
        if raw.nbytes >= OWN_BLOB:
            where, name, size = reuse.get(_address(raw) or 0, (None, "", 0))
            if where == store.where and size == raw.nbytes and name not in reused:
                reused.add(name)  # a second array on the same memory gets a copy
            else:
                name = store.create(f"{tag}{index}", raw.nbytes, [(0, raw)])
            table.append((name, 0, raw.nbytes))
        else:
            offset = -(-end // _ALIGN) * _ALIGN
            parts.append((offset, raw))
            table.append((None, offset, raw.nbytes))
            end = offset + raw.nbytes
    main = store.create(f"{tag}m", end, parts)
    return {
        "marshaller": marshaller,
        "mode": store.mode,
        "where": store.where,
        "main": (main, end, stream.nbytes),
        "buffers": table,
        "blobs": list(store.created),
    }


def _address(view: memoryview) -> int | None:
    """Where a writable buffer's memory starts (None for a read-only one)."""
    if view.readonly or not view.nbytes:
        return None
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _raw(buffer: pickle.PickleBuffer) -> memoryview:
    try:
        return buffer.raw()
    except BufferError:  # not contiguous: one copy
        return memoryview(memoryview(buffer).tobytes(order="A"))


_PICKLERS: dict[str, Any] = {}


def _pickler_class(marshaller: str) -> Any:
    """dill's or cloudpickle's Pickler, taught references to kernel objects, live globals and
    out-of-band ``bytes`` (built on first use: only the chosen marshaller must be installed)."""
    if marshaller in _PICKLERS:
        return _PICKLERS[marshaller]
    if marshaller == "dill":
        import dill

        class DillPickler(dill.Pickler):  # type: ignore[misc]
            # dill's pure-Python pickler asks reducer_override for every object; dill already
            # gives notebook functions the live namespace (through ``_main``).
            def reducer_override(self, obj: Any) -> Any:
                reduced = _reduce_special(self, obj)
                if reduced is NotImplemented and _is_ndarray(obj):
                    # numpy's own reduction (out-of-band buffer); dill's copies into the stream
                    return obj.__reduce_ex__(self.proto)
                return reduced

        _PICKLERS[marshaller] = DillPickler
    elif marshaller == "cloudpickle":
        import cloudpickle

        class CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                reduced = _reduce_special(self, obj)
                return super().reducer_override(obj) if reduced is NotImplemented else reduced

            def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
                reduced = super()._dynamic_function_reduce(func)
                if func.__globals__ is self.jp_namespace:
                    return _with_live_globals(reduced)
                return reduced

        _PICKLERS[marshaller] = CloudPickler
    else:
        raise ValueError(f"unknown marshaller {marshaller!r}; use one of {', '.join(MARSHALLERS)}")
    return _PICKLERS[marshaller]


def _reduce_special(pickler: Any, obj: Any) -> Any:
    path = pickler.jp_references.get(id(obj))
    if path is not None:
        return _main_object, path
    if _is_large_bytes(obj):
        return type(obj), (pickle.PickleBuffer(obj),)
    return NotImplemented


def _with_live_globals(reduced: Any) -> Any:
    """cloudpickle's reduction of a notebook function, but bound to the live namespace of the
    loading side instead of a copy of the globals it uses. Left alone if cloudpickle's shape of
    reduction is not the one known here."""
    try:
        make, newargs, (attrs, slots), items, dict_items, _setter = reduced
        code, _globals, *rest = newargs
    except (TypeError, ValueError):
        return reduced
    if not isinstance(slots, dict) or "__globals__" not in slots:
        return reduced
    slots = {key: value for key, value in slots.items() if key != "__globals__"}
    return make, (code, _LIVE, *rest), (attrs, slots), items, dict_items, _set_function_state


def _set_function_state(func: types.FunctionType, state: Any) -> None:
    attrs, slots = state
    func.__dict__.update(attrs)
    closure = slots.get("__closure__")
    if closure is not None and func.__closure__ is not None:
        for index, cell in enumerate(func.__closure__):
            with contextlib.suppress(ValueError):  # an empty cell stays empty
                cell.cell_contents = closure[index].cell_contents
    for key, value in slots.items():
        if key not in ("__closure__", "_cloudpickle_submodules"):
            setattr(func, key, value)


def _target_namespace() -> dict[str, Any]:
    if not _TARGETS:
        raise pickle.UnpicklingError("notebook objects can only be loaded into a namespace")
    return _TARGETS[-1]


def _main_object(*path: str) -> Any:
    obj = _target_namespace()[path[0]]
    for attr in path[1:]:
        obj = getattr(obj, attr)
    return obj


class _LiveNamespace(dict):  # type: ignore[type-arg]
    """Pickled in place of a notebook function's globals; loads as the target namespace."""

    def __reduce__(self) -> tuple[Callable[[], dict[str, Any]], tuple[()]]:
        return _target_namespace, ()


_LIVE = _LiveNamespace()


class _Bytes:
    """A large top-level ``bytes``/``bytearray``, pickled out-of-band (the C pickler does not
    offer exact ``bytes`` to ``reducer_override``)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray) -> None:
        self.value = value

    def __reduce__(self) -> tuple[type, tuple[pickle.PickleBuffer]]:
        return type(self.value), (pickle.PickleBuffer(self.value),)


class _Main:
    """A stand-in ``__main__`` module: an object whose ``__dict__`` is the namespace."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.__dict__ = namespace


@contextlib.contextmanager
def as_main_module(namespace: dict[str, Any]) -> Iterator[None]:
    """Make ``sys.modules['__main__']`` the namespace's module (already so in the kernel and
    the child). dill pickles a notebook function's globals as a reference to
    ``__main__.__dict__`` when they are that module's namespace, and loads them from there."""
    current = sys.modules.get("__main__")
    if getattr(current, "__dict__", None) is namespace:
        yield
        return
    sys.modules["__main__"] = _Main(namespace)  # type: ignore[assignment]
    try:
        yield
    finally:
        if current is None:
            sys.modules.pop("__main__", None)
        else:
            sys.modules["__main__"] = current


def _is_large_bytes(value: Any) -> bool:
    return type(value) in (bytes, bytearray) and len(value) >= LARGE_BYTES


def _is_ndarray(value: Any) -> bool:
    kind = type(value)
    return kind.__name__ == "ndarray" and kind.__module__ == "numpy"
