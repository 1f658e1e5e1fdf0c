"""Scan a pickle (data.pkl) without importing or running anything from it:
every global becomes an inert stub class, persistent ids are recorded in order.
No torch import, so small tools (ref_ckprep.py) can use it cheaply."""
import io
import pickle


class StubBase:
    def __new__(cls, *a, **k):
        return object.__new__(cls)

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return StubBase()

    def __setstate__(self, state):
        pass

    def __setitem__(self, k, v):
        pass

    def append(self, x):
        pass

    def extend(self, x):
        pass

    def add(self, x):
        pass


class ScanUnpickler(pickle.Unpickler):
    """Unpickles without importing anything; records persistent ids in order."""

    def __init__(self, f):
        super().__init__(f)
        self.pids = []

    def find_class(self, module, name):
        return type(name, (StubBase,), {"_gmodule": module, "_gname": name})

    def persistent_load(self, pid):
        self.pids.append(pid)
        return StubBase()


def decode(x):
    return x.decode("ascii") if isinstance(x, bytes) else x


def storage_keys_in_order(pkl_bytes):
    """Storage keys of a torch data.pkl in order of first reference."""
    u = ScanUnpickler(io.BytesIO(pkl_bytes))
    u.load()
    order = []
    for pid in u.pids:
        k = decode(pid[2])
        if k not in order:
            order.append(k)
    return order
