"""Rollouts on disk: World Models' 10 000 random episodes (Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. 3.3)
stored in files, read back a record at a time, RAM bounded whatever their number.

:class:`DiskEpisodeReplayBuffer` is an :class:`~sb3_mb.common.buffers.EpisodeReplayBuffer` (same records,
same ring, same sampling; pass it as ``replay_buffer_class``) whose arrays are ``.npy`` files in a folder
instead of RAM. ``WorldModels`` reads ``observations[index]`` for V's minibatches, and M trains on V's
posterior of the stored frames, which :func:`latent_storage` also keeps on disk for this buffer (the paper's
encoding stage: the original writes ``series.npz``). The RAM used is the episodes in progress (one per env),
the episode table, one byte per record of "encoded" flags and the minibatches; the data is the page cache's.

Layout of ``path``::

    observations.npy  (buffer_size, *obs_shape)  obs dtype   (uint8 images)
    actions.npy       (buffer_size, action_dim)  float32
    rewards.npy       (buffer_size,)             float32
    is_first.npy, terminated.npy, truncated.npy  (buffer_size,) bool
    latent_mu.npy, latent_log_var.npy  (buffer_size, z_dim) float32   (made by latent_storage)
    index.json        the complete episodes [(first record, n_records)], the ring's head, counters

Each ``.npy`` is a standard NumPy file (``np.load(path, mmap_mode="r")`` reads it), made sparse at full size.
Records are read and written with ``pread`` / ``pwrite``, coalescing consecutive records (an M window is one
read), not through a memory map: the page cache is then not charged to the process's resident set, so RSS
stays flat as the store grows. Zarr 3 was measured first (sharded, one frame per inner chunk: 3 ms per random
96x96x3 frame, 0.3 s per V minibatch of 100, against about 2 ms for the 100 ``pread`` calls).

Crash safety. ``index.json`` is the truth: it names only episodes whose records are all written, and it is
replaced atomically (:func:`~sb3_mb.common.save_util.atomic_write`). An episode is written, then committed;
when the ring evicts old episodes, the index without them is committed before their records are overwritten.
A run killed at any point leaves a store that opens with the episodes committed last; the episodes in
progress are lost. ``fsync=True`` also flushes the data files before each commit (power cuts; a killed
process does not need it).

Pickling (SB3's ``save_replay_buffer``) keeps the path, not the data; unpickling reopens the folder and takes
its index (with a warning when it has changed since the pickle).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer

from sb3_mb.common.buffers import EpisodeReplayBuffer
from sb3_mb.common.save_util import atomic_write

__all__ = ["DiskEpisodeReplayBuffer", "RecordArray", "latent_storage"]

INDEX_FILE = "index.json"
FORMAT_VERSION = 1
ARRAY_NAMES = ("observations", "actions", "rewards", "is_first", "terminated", "truncated")
LATENT_NAMES = ("latent_mu", "latent_log_var")


def _runs(sorted_unique: np.ndarray) -> list[tuple[int, int]]:
    """``(position, length)`` of each run of consecutive values of a sorted array of unique integers."""
    if len(sorted_unique) == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    bounds = np.concatenate([[0], breaks, [len(sorted_unique)]])
    return [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class RecordArray:
    """A ``.npy`` file indexed along its first axis (records) like a NumPy array, by ``pread`` / ``pwrite``.

    ``array[index]`` with an integer, a slice or an integer array of any shape returns a new NumPy array
    ``(*index.shape, *record_shape)``; ``array[index] = values`` writes (values broadcast to that shape; with
    repeated indices the last value wins). ``np.asarray(array)`` reads the whole file. Picklable: the path,
    not the data; the file descriptor is opened again in each process.

    :param path: the ``.npy`` file. :param shape: ``(n_records, *record_shape)``. :param dtype: its dtype.
    :param create: make the file (sparse, zeros) at this shape, replacing any; otherwise open it and check
        that it has this shape and dtype.
    :raises ValueError: if an existing file has another shape or dtype, or is not a ``.npy`` file.
    :raises IndexError: for an index outside ``[-n_records, n_records)``.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype: Any, create: bool):
        self._fd: int | None = None
        self._pid: int | None = None
        self.path = str(path)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        if create:
            # open_memmap writes the header and one byte at the end: a sparse file of the full size.
            del_array = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
            del del_array
        with open(self.path, "rb") as file:
            try:
                version = np.lib.format.read_magic(file)
                header = (
                    np.lib.format.read_array_header_1_0(file)
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0(file)
                )
            except ValueError as error:
                raise ValueError(f"{self.path} is not a .npy file: {error}") from error
            self.offset = file.tell()
        if tuple(header[0]) != self.shape or np.dtype(header[2]) != self.dtype or header[1]:
            raise ValueError(
                f"{self.path} holds a {header[2]} array of shape {tuple(header[0])}; expected {self.dtype} "
                f"{self.shape}"
            )
        self.record_shape = self.shape[1:]
        self.record_bytes = int(np.prod(self.record_shape, dtype=np.int64)) * self.dtype.itemsize

    # ------------------------------------------------------------------------------------ file
    @property
    def fd(self) -> int:
        """The file descriptor of this process (opened on first use, again after a fork)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDWR), os.getpid()
        return self._fd

    def close(self) -> None:
        """Close the file descriptor (reopened on the next access)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def fsync(self) -> None:
        """Flush the written records to the disk."""
        os.fsync(self.fd)

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, TypeError):  # interpreter shutdown
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"], state["_pid"] = None, None
        return state

    # ------------------------------------------------------------------------------------ indexing
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _flat_index(self, index: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        if isinstance(index, slice):
            index = np.arange(*index.indices(self.shape[0]))
        index = np.asarray(index)
        if index.dtype == bool or not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"RecordArray takes integer indices, got {index.dtype}")
        flat = index.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < -self.shape[0] or flat.max() >= self.shape[0]):
            raise IndexError(f"index out of range for {self.shape[0]} records")
        return np.where(flat < 0, flat + self.shape[0], flat), index.shape

    def __getitem__(self, index: Any) -> np.ndarray:
        flat, shape = self._flat_index(index)
        unique, inverse = np.unique(flat, return_inverse=True)
        data = np.empty((len(unique), *self.record_shape), dtype=self.dtype)
        fd = self.fd
        for position, length in _runs(unique):
            view = memoryview(data[position : position + length].reshape(-1).view(np.uint8))
            read = os.preadv(fd, [view], self.offset + int(unique[position]) * self.record_bytes)
            if read != len(view):
                raise OSError(f"{self.path}: short read ({read} of {len(view)} bytes)")
        result = data[inverse.reshape(-1)].reshape((*shape, *self.record_shape))
        return result[()] if shape == () else result  # one record of a 1-D array: a NumPy scalar

    def __setitem__(self, index: Any, values: Any) -> None:
        flat, shape = self._flat_index(index)
        values = np.broadcast_to(np.asarray(values, dtype=self.dtype), (*shape, *self.record_shape))
        values = values.reshape(len(flat), *self.record_shape)
        order = np.argsort(flat, kind="stable")
        flat, values = flat[order], values[order]
        last = np.append(flat[1:] != flat[:-1], True)  # of repeated indices, the last value wins
        flat, values = flat[last], np.ascontiguousarray(values[last])
        fd = self.fd
        for position, length in _runs(flat):
            block = values[position : position + length].reshape(-1).view(np.uint8)
            written = os.pwritev(
                fd, [memoryview(block)], self.offset + int(flat[position]) * self.record_bytes
            )
            if written != block.nbytes:
                raise OSError(f"{self.path}: short write ({written} of {block.nbytes} bytes)")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self[np.arange(self.shape[0])]
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"RecordArray({self.path!r}, shape={self.shape}, dtype={self.dtype})"


class DiskEpisodeReplayBuffer(EpisodeReplayBuffer):
    """:class:`~sb3_mb.common.buffers.EpisodeReplayBuffer` with its arrays in ``.npy`` files (see the module).

    The records, the ring, the eviction of whole episodes and the sampling are the parent's; the arrays
    ``observations``, ``actions``, ``rewards``, ``is_first``, ``terminated``, ``truncated`` are
    :class:`RecordArray`\\ s. Pass it as ``WorldModels(..., replay_buffer_class=DiskEpisodeReplayBuffer,
    replay_buffer_kwargs=dict(path="runs/car/rollouts"))``.

    :param buffer_size: capacity in records (an episode of ``L`` steps takes ``L + 1``); the files are made at
        this size, sparse (disk used grows with the records written: 27 kB per 96x96x3 frame).
    :param observation_space: ``Box`` (images as ``uint8``). :param action_space: ``Box``, ``Discrete`` or
        ``MultiDiscrete``. :param device: of the sampled tensors. :param n_envs: envs feeding ``add``.
    :param optimize_memory_usage: must be False (as the parent).
    :param handle_timeout_termination: as the parent.
    :param path: the store's folder (made if missing); None: a new temporary folder (kept: it is the data).
    :param mode: ``"a"``: open the store at ``path`` with its episodes if there is one (it must have the
        same ``buffer_size``, spaces and number of envs), else make one; ``"w"``: make an empty store,
        replacing the files of one at ``path``. The model saves its ``replay_buffer_kwargs``: a model made
        with ``"w"`` empties its store again when it is loaded, so keep ``"w"`` for one-off runs.
    :param fsync: flush the data files to the disk before each commit of the index (survives power cuts).
    :raises TypeError: for ``Dict`` observation spaces.
    :raises ValueError: for ``buffer_size < 2``, ``optimize_memory_usage=True``, an unknown ``mode``, or a
        store at ``path`` of another layout.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        path: str | os.PathLike | None = None,
        mode: str = "a",
        fsync: bool = False,
    ):
        if isinstance(observation_space, spaces.Dict):
            raise TypeError("DiskEpisodeReplayBuffer does not support Dict observation spaces")
        if optimize_memory_usage:
            raise ValueError("DiskEpisodeReplayBuffer stores one observation per step; optimize_memory_usage")
        if buffer_size < 2:
            raise ValueError(f"buffer_size must be >= 2 records, got {buffer_size}")
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' (open or make) or 'w' (make afresh), got {mode!r}")
        # The parent's __init__ would allocate the arrays in RAM: only its base is called.
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.fsync = fsync
        self.path = os.path.abspath(path) if path is not None else tempfile.mkdtemp(prefix="sb3_mb_rollouts_")
        os.makedirs(self.path, exist_ok=True)

        obs_dtype = observation_space.dtype if observation_space.dtype is not None else np.float32
        if np.issubdtype(obs_dtype, np.floating):
            obs_dtype = np.float32
        self._layout = {
            "format": FORMAT_VERSION,
            "buffer_size": int(buffer_size),
            "obs_shape": [int(s) for s in self.obs_shape],
            "obs_dtype": np.dtype(obs_dtype).str,
            "action_dim": int(self.action_dim),
            "n_envs": int(n_envs),
        }
        index = self._read_index() if mode == "a" else None
        if index is not None:
            differs = {k: (index.get(k), v) for k, v in self._layout.items() if index.get(k) != v}
            if differs:
                raise ValueError(
                    f"the episode store at {self.path} has another layout ({differs}: stored, asked); open "
                    "it with the same buffer_size, spaces and n_envs, or pass mode='w' to replace it"
                )
        self._open_arrays(create=index is None)
        free = shutil.disk_usage(self.path).free
        full = sum(a.record_bytes for a in self._arrays().values()) * buffer_size
        if index is None and full > free:
            warnings.warn(
                f"the episode store at {self.path} would take {full / 1e9:.2f} GB when full; "
                f"{free / 1e9:.2f} GB are free there"
            )

        self._episodes: deque[tuple[int, int]] = deque()
        self._head = 0
        self._n_records = 0
        self._n_episodes_added = 0
        self._index_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._staging: list[dict[str, list]] = [self._empty_staging() for _ in range(n_envs)]
        if index is None:
            self._commit()
        else:
            self._apply_index(index)

    # ------------------------------------------------------------------------------------ files
    def _arrays(self) -> dict[str, RecordArray]:
        return {name: getattr(self, name) for name in ARRAY_NAMES}

    def _open_arrays(self, create: bool) -> None:
        n = self.buffer_size
        shapes = {
            "observations": ((n, *self.obs_shape), np.dtype(self._layout["obs_dtype"])),
            "actions": ((n, self.action_dim), np.float32),
            "rewards": ((n,), np.float32),
            "is_first": ((n,), bool),
            "terminated": ((n,), bool),
            "truncated": ((n,), bool),
        }
        if create:
            with_index = Path(self.path, INDEX_FILE)
            with_index.unlink(missing_ok=True)  # no index names the new files' records
        for name, (shape, dtype) in shapes.items():
            setattr(self, name, RecordArray(Path(self.path, f"{name}.npy"), shape, dtype, create))

    def _read_index(self) -> dict[str, Any] | None:
        file = Path(self.path, INDEX_FILE)
        if not file.exists():
            return None
        with open(file) as stream:
            return json.load(stream)

    def _apply_index(self, index: dict[str, Any]) -> None:
        self._episodes = deque((int(start), int(n)) for start, n in index["episodes"])
        self._head = int(index["head"])
        self._n_records = sum(n for _, n in self._episodes)
        self._n_episodes_added = int(index["n_episodes_added"])
        self._index_cache = {}
        self.pos, self.full = self._head, self._n_records == self.buffer_size

    def _commit(self) -> None:
        """Replace ``index.json`` atomically with the current complete episodes (all written)."""
        if self.fsync:
            for array in self._arrays().values():
                array.fsync()
        index = {
            **self._layout,
            "episodes": [[int(start), int(n)] for start, n in self._episodes],
            "head": int(self._head),
            "n_episodes_added": int(self._n_episodes_added),
        }
        with atomic_write(Path(self.path, INDEX_FILE)) as temporary, open(temporary, "w") as stream:
            json.dump(index, stream, separators=(",", ":"))

    def _store_episode(self, stage: dict, terminated: bool, truncated: bool) -> None:
        n = len(stage["observations"])
        evicted = False
        while self.buffer_size - self._n_records < n:  # evict the oldest episodes whole
            _, n_old = self._episodes.popleft()
            self._n_records -= n_old
            evicted = True
        if evicted:
            self._commit()  # the index stops naming the records about to be overwritten
        super()._store_episode(stage, terminated, truncated)
        self._commit()

    def reset(self) -> None:
        """Drop every stored and staged episode (the index is emptied; the files stay at their size)."""
        super().reset()
        self._commit()

    def disk_bytes(self) -> int:
        """Bytes the store's files take on the disk (sparse files count only what was written)."""
        return sum(file.stat().st_blocks * 512 for file in Path(self.path).glob("*.npy"))

    def close(self) -> None:
        """Close the files (reopened on the next access)."""
        for array in self._arrays().values():
            array.close()

    # ------------------------------------------------------------------------------------ latents
    def latent_arrays(self, z_dim: int) -> dict[str, Any]:
        """New storage for V's posterior of the stored frames (:func:`latent_storage`): ``mu`` and
        ``log_var`` as :class:`RecordArray` files ``(buffer_size, z_dim)`` float32 (made afresh: V changed),
        ``encoded`` a boolean NumPy array ``(buffer_size,)`` in RAM (1 byte per record)."""
        arrays: dict[str, Any] = {
            name.removeprefix("latent_"): RecordArray(
                Path(self.path, f"{name}.npy"), (self.buffer_size, z_dim), np.float32, create=True
            )
            for name in LATENT_NAMES
        }
        arrays["encoded"] = np.zeros(self.buffer_size, dtype=bool)
        return arrays

    # ------------------------------------------------------------------------------------ pickling
    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        index = self._read_index()
        if index is None:
            raise FileNotFoundError(
                f"the episode store of this buffer, {self.path}, is gone (a pickled DiskEpisodeReplayBuffer "
                "holds the path, not the data)"
            )
        pickled = (list(self._episodes), self._head, self._n_episodes_added)
        self._apply_index(index)
        if (list(self._episodes), self._head, self._n_episodes_added) != pickled:
            warnings.warn(
                f"the episode store at {self.path} has changed since this buffer was pickled "
                f"({pickled[2]} episodes added then, {self._n_episodes_added} now): it holds the store's "
                "current episodes"
            )


def latent_storage(buffer: EpisodeReplayBuffer, z_dim: int) -> dict[str, Any]:
    """Empty storage for V's posterior ``(mu, log_var)`` of every record of ``buffer`` (World Models' encoding
    stage), indexed by record like the buffer's arrays.

    :return: ``{"mu": (buffer_size, z_dim), "log_var": (buffer_size, z_dim), "encoded": (buffer_size,)
        bool}``: NumPy arrays in RAM, or files for a :class:`DiskEpisodeReplayBuffer`
        (:meth:`DiskEpisodeReplayBuffer.latent_arrays`).
    """
    if isinstance(buffer, DiskEpisodeReplayBuffer):
        return buffer.latent_arrays(z_dim)
    return {
        "mu": np.zeros((buffer.buffer_size, z_dim), np.float32),
        "log_var": np.zeros((buffer.buffer_size, z_dim), np.float32),
        "encoded": np.zeros(buffer.buffer_size, dtype=bool),
    }
