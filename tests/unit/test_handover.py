"""The state handover in one process: what travels and how (out-of-band buffers, shared objects,
live globals, references to the kernel's classes), what is left out, and what is left behind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jumper_proxy.child import handover, pickling, transport
from jumper_proxy.child.bootstrap import bundle, kernel_code

MARSHALLERS = ["dill", "cloudpickle"]
MODES = ["memory", "disk"]

StoreFactory = Callable[[str], transport.Store]


def shm_entries(prefix: str) -> list[str]:
    return [name for name in os.listdir(transport.SHM_DIR) if name.startswith(prefix)]


@pytest.fixture
def new_store(tmp_path: Path) -> Iterator[StoreFactory]:
    """Stores for the test; afterwards each must be removable without a trace."""
    stores: list[transport.Store] = []

    def make(mode: str) -> transport.Store:
        if mode == transport.MEMORY:
            where = transport.new_shm_prefix(os.getpid())
        else:
            where = transport.make_private_dir(str(tmp_path / "persist"))
        stores.append(transport.Store(mode, where))
        return stores[-1]

    yield make
    for store in stores:
        store.remove_all()
        if store.mode == transport.MEMORY:
            assert shm_entries(store.where) == []
        else:
            assert not os.path.exists(store.where)


def notebook(code: str) -> dict[str, Any]:
    """A namespace as a notebook's cells leave it (functions and classes of ``__main__``)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(textwrap.dedent(code), namespace)
    return namespace


def round_trip(
    values: dict[str, Any],
    marshaller: str,
    store: transport.Store,
    source: dict[str, Any],
    target: dict[str, Any],
    references: dict[int, tuple[str, ...]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    with pickling.as_main_module(source):
        data, skipped = pickling.dump(values, marshaller, source, references or {}, store, "t")
    loaded = pickling.load(json.loads(json.dumps(data)), target, zero_copy=True)
    return loaded, data, skipped


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("marshaller", MARSHALLERS)
def test_large_buffers_travel_out_of_band(
    marshaller: str, mode: str, new_store: StoreFactory
) -> None:
    big = np.arange(4 << 20, dtype=np.float64)  # 32 MiB
    values = {
        "big": big,
        "small": np.arange(10),
        "blob": b"x" * (1 << 20),
        "frame": np.ones((3, 4), order="F"),
    }
    store = new_store(mode)
    loaded, data, skipped = round_trip(values, marshaller, store, notebook(""), notebook(""))

    assert skipped == []
    # the data is not in the pickle stream: it is a few hundred bytes for 33 MiB of values
    assert data["main"][2] < 4096
    sizes = sorted(size for _name, _offset, size in data["buffers"])
    assert sizes == sorted([big.nbytes, 80, 1 << 20, 96])
    own_blobs = [name for name, _offset, size in data["buffers"] if name is not None]
    assert len(own_blobs) == 2  # the large array and the large bytes
    np.testing.assert_array_equal(loaded["big"], big)
    np.testing.assert_array_equal(loaded["small"], values["small"])
    np.testing.assert_array_equal(loaded["frame"], values["frame"])
    assert loaded["blob"] == values["blob"] and type(loaded["blob"]) is bytes
    if mode == transport.MEMORY:  # zero-copy: the array lives in the mapped segment
        assert not loaded["big"].flags.owndata
    store.remove_all(data["blobs"])
    loaded["big"][0] = -1.0  # still valid (and writable) after the segment is unlinked
    assert loaded["big"][0] == -1.0 and loaded["big"][-1] == big[-1]


def test_dill_sends_nested_large_bytes_out_of_band(new_store: StoreFactory) -> None:
    values = {"nested": {"payload": bytearray(b"y" * (1 << 17))}}
    loaded, data, _ = round_trip(values, "dill", new_store("memory"), notebook(""), notebook(""))
    assert data["main"][2] < 1024
    assert loaded["nested"]["payload"] == values["nested"]["payload"]
    assert type(loaded["nested"]["payload"]) is bytearray


@pytest.mark.parametrize("marshaller", MARSHALLERS)
def test_objects_shared_between_names_stay_shared(marshaller: str, new_store: StoreFactory) -> None:
    source = notebook(
        """
        class Point:
            def __init__(self, x):
                self.x = x
        shared = [1, 2]
        holder = {"list": shared}
        point = Point(3)
        """
    )
    values = {k: source[k] for k in ("Point", "shared", "holder", "point")}
    loaded, _, _ = round_trip(values, marshaller, new_store("memory"), source, notebook(""))
    assert loaded["holder"]["list"] is loaded["shared"]
    assert type(loaded["point"]) is loaded["Point"]
    assert loaded["point"].x == 3


@pytest.mark.parametrize("marshaller", MARSHALLERS)
def test_notebook_functions_see_the_live_namespace(
    marshaller: str, new_store: StoreFactory
) -> None:
    source = notebook(
        """
        N = 1
        def f():
            return N * 2
        class Scaler:
            def scaled(self):
                return N * 3
        """
    )
    target = notebook("")
    values = {k: source[k] for k in ("N", "f", "Scaler")}
    loaded, _, _ = round_trip(values, marshaller, new_store("memory"), source, target)
    target.update(loaded)
    target["N"] = 10
    assert target["f"].__globals__ is target
    assert target["f"]() == 20
    assert target["Scaler"]().scaled() == 30
    # loading wrote nothing into the target namespace by itself
    assert set(target) == {"__name__", "__builtins__", "N", "f", "Scaler"}


@pytest.mark.parametrize("marshaller", MARSHALLERS)
def test_references_bring_back_the_kernels_classes(
    marshaller: str, new_store: StoreFactory
) -> None:
    kernel = notebook(
        """
        class Foo:
            class Inner:
                pass
        def make():
            return Foo()
        foo = Foo()
        """
    )
    child = notebook("")
    to_child = {k: kernel[k] for k in ("Foo", "make", "foo")}
    loaded, _, _ = round_trip(to_child, marshaller, new_store("memory"), kernel, child)
    child.update(loaded)

    exec("foo.x = 1\nnew = make()\ninner = Foo.Inner()\nalias = Foo", child)
    back = {k: child[k] for k in ("foo", "new", "inner", "alias")}
    references = handover.reference_paths(loaded)
    result, _, _ = round_trip(back, marshaller, new_store("memory"), child, kernel, references)

    assert type(result["foo"]) is kernel["Foo"] and result["foo"].x == 1
    assert type(result["new"]) is kernel["Foo"]
    assert type(result["inner"]) is kernel["Foo"].Inner
    assert result["alias"] is kernel["Foo"]


@pytest.mark.parametrize("marshaller", MARSHALLERS)
def test_unserializable_values_are_named_and_left_out(
    marshaller: str, new_store: StoreFactory
) -> None:
    source = notebook("gen = (i for i in range(3))\nkept = [1, 2]\n")
    values = {"gen": source["gen"], "kept": source["kept"]}
    if marshaller == "cloudpickle":
        values["lock"] = threading.Lock()
    loaded, _, skipped = round_trip(values, marshaller, new_store("disk"), source, notebook(""))
    assert skipped == (["gen", "lock"] if marshaller == "cloudpickle" else ["gen"])
    assert loaded == {"kept": [1, 2]}
    line = handover.skipped_warning(skipped, marshaller, "in")
    assert "\n" not in line and all(name in line for name in skipped)


def test_ipython_names_never_travel() -> None:
    internal = ["In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_i7", "_12", "_oh", "_ih"]
    internal += ["_dh", "get_ipython", "exit", "quit", "__builtins__", "__name__", "__doc__"]
    assert [name for name in internal if not handover.is_internal(name)] == []
    user = ["x", "_x", "_private", "i1", "_i1x", "__x", "data_", "In2"]
    assert [name for name in user if handover.is_internal(name)] == []


def test_reduction_of_an_unknown_cloudpickle_shape_is_left_alone() -> None:
    odd = (print, ("args",), "state")
    assert pickling._with_live_globals(odd) is odd


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("marshaller", MARSHALLERS)
def test_kernel_and_child_sides_in_one_process(
    marshaller: str, mode: str, new_store: StoreFactory
) -> None:
    """export (hidden code) → child_load → the cell → child_dump → import (hidden code)."""
    kernel = notebook(
        """
        import os.path as osp
        import numpy as np
        class Foo:
            pass
        foo = Foo()
        arr = np.zeros(5)
        gone = 1
        gen = (i for i in range(2))
        """
    )
    kernel.update(In=["", "x"], _i1="x", _1=1)
    before = set(kernel)
    store = new_store(mode)

    exported = run_in(kernel, {"action": "export", "marshaller": marshaller, **where(store)})
    assert set(kernel) == before  # the hidden code defined nothing
    assert exported["modules"] == {"osp": "posixpath", "np": "numpy"}
    assert exported["skipped"] == ["gen"] and len(exported["warnings"]) == 1

    # the child's side with the same module as the kernel's side used (one process here)
    child_side = sys.modules[bundle()[0] + ".handover"]
    child = notebook("")
    warnings: list[str] = []
    loaded = child_side.child_load(child, exported, "", warnings.append)
    assert {"In", "_i1", "_1", "gen"}.isdisjoint(child) and child["osp"] is os.path
    exec("foo.tag = 'x'\narr[0] = 7\nnew = Foo()\ndel gone\nimport json as js", child)
    output = {"marshaller": marshaller, **where(store)}
    manifest = child_side.child_dump(child, loaded, output, warnings.append)
    assert warnings == []
    assert manifest["deleted"] == ["gone"] and manifest["modules"] == {"js": "json"}

    summary = run_in(kernel, {"action": "import", "manifest": manifest})
    assert summary["deleted"] == ["gone"] and "gone" not in kernel
    assert set(summary["updated"]) == {"foo", "arr", "new", "js"}
    assert isinstance(kernel["foo"], kernel["Foo"]) and kernel["foo"].tag == "x"
    assert isinstance(kernel["new"], kernel["Foo"])
    assert kernel["arr"][0] == 7 and kernel["js"] is json
    assert next(kernel["gen"]) == 0 and kernel["In"] == ["", "x"]


def where(store: transport.Store) -> dict[str, str]:
    return {"mode": store.mode, "where": store.where}


def run_in(namespace: dict[str, Any], request: dict[str, Any]) -> Any:
    """What the proxy's run_hidden does, in this process: hidden code, then the expression."""
    code, expressions = kernel_code(request)
    exec(code, namespace)
    return json.loads(eval(expressions["result"], namespace))


def test_segments_are_private_and_swept_by_prefix(new_store: StoreFactory) -> None:
    store = new_store("memory")
    name = store.create("a", 10, [(0, memoryview(b"0123456789"))])
    assert stat.S_IMODE(os.stat(f"{transport.SHM_DIR}/{name}").st_mode) == 0o600
    assert bytes(store.open(name, 10, zero_copy=True)) == b"0123456789"
    # a segment nobody reported (its creator died before saying so) goes too
    stray = transport.Store("memory", store.where)
    stray.create("stray", 1, [(0, memoryview(b"x"))])
    store.remove_all()
    assert shm_entries(store.where) == []


def test_disk_store_is_a_private_directory(new_store: StoreFactory) -> None:
    store = new_store("disk")
    name = store.create("a", 3, [(0, memoryview(b"abc"))])
    assert stat.S_IMODE(os.stat(store.where).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(store.where, name)).st_mode) == 0o600
    assert bytes(store.open(name, 3, zero_copy=True)) == b"abc"


def test_segments_cross_processes_without_resource_tracker_noise() -> None:
    """Created here, read and unlinked in another process: no tracker, no warnings, gone."""
    program = textwrap.dedent(
        """
        import sys
        from multiprocessing import resource_tracker
        from jumper_proxy.child import transport
        store = transport.Store("memory", sys.argv[2])
        if sys.argv[1] == "create":
            print(store.create("x", 4, [(0, memoryview(b"data"))]))
        else:
            assert bytes(store.open(sys.argv[3], 4, zero_copy=True)) == b"data"
            store.remove_all()
        assert resource_tracker._resource_tracker._fd is None, "resource tracker started"
        """
    )
    prefix = transport.new_shm_prefix(os.getpid())
    created = subprocess.run(
        [sys.executable, "-c", program, "create", prefix], capture_output=True, text=True
    )
    assert created.returncode == 0 and created.stderr == ""
    removed = subprocess.run(
        [sys.executable, "-c", program, "remove", prefix, created.stdout.strip()],
        capture_output=True,
        text=True,
    )
    assert removed.returncode == 0 and removed.stderr == ""
    assert shm_entries(prefix) == []


@pytest.mark.parametrize("mode", MODES)
def test_arrays_the_cell_kept_go_back_without_a_copy(mode: str, new_store: StoreFactory) -> None:
    kernel = notebook(
        """
        import numpy as np
        kept = np.zeros(1 << 18)      # 2 MiB each: a blob of their own
        untouched = np.zeros(1 << 18)
        replaced = np.zeros(1 << 18)
        """
    )
    store = new_store(mode)
    exported = run_in(kernel, {"action": "export", "marshaller": "dill", **where(store)})
    child_side = sys.modules[bundle()[0] + ".handover"]
    child = notebook("")
    loaded = child_side.child_load(child, exported, "", print)
    exec("kept[0] = 1.0\nreplaced = replaced + 2.0\nalias = kept", child)
    output = {"marshaller": "dill", **where(store)}
    manifest = child_side.child_dump(child, loaded, output, print)

    sent = {name for name, _offset, _size in manifest["data"]["buffers"]}
    assert len(sent & set(exported["data"]["blobs"])) == 2  # kept, untouched: the kernel's blobs
    assert len(manifest["data"]["blobs"]) == 2  # written: the main blob and `replaced`
    run_in(kernel, {"action": "import", "manifest": manifest})
    assert kernel["kept"][0] == 1.0 and kernel["alias"] is kernel["kept"]
    assert kernel["replaced"][0] == 2.0 and kernel["untouched"].sum() == 0
