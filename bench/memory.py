"""Sample the resident memory of a whole process tree from /proc (Linux only)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def _task_children(pid: int) -> list[int] | None:
    """Return pid's direct children from /proc/<pid>/task/*/children, None if unsupported."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # the process has just exited
    for tid in tasks:
        # Children belong to the thread that forked them (the engine spawns ffmpeg from
        # whichever thread calls process()), so every thread's list is read.
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except FileNotFoundError:
            if not Path(f"/proc/{pid}/task/{tid}").exists():
                continue  # the thread ended between listdir and read
            return None  # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


def _scanned_children() -> dict[int, list[int]]:
    """Return every process's children by scanning /proc/*/stat (the slow fallback)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(root: int) -> list[int]:
    """Return root and all its living descendants."""
    pids = [root]
    scanned: dict[int, list[int]] | None = None
    index = 0
    while index < len(pids):
        pid = pids[index]
        index += 1
        kids = _task_children(pid) if scanned is None else scanned.get(pid, [])
        if kids is None:
            scanned = _scanned_children()
            kids = scanned.get(pid, [])
        pids.extend(kids)
    return pids


def rss_bytes(pid: int) -> int:
    """Return a process's resident set size (0 once it has gone)."""
    try:
        # statm's second field is VmRSS in pages: one small read, no text to scan.
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler:
    """Poll the summed RSS of a process tree on a thread; keep the largest simultaneous sum."""

    def __init__(self, root: int | None = None, interval: float = 0.05) -> None:
        self.root = root if root is not None else os.getpid()
        self.interval = interval
        self.peak = 0  # bytes: the largest sum over the tree at one instant
        self.largest: dict[int, int] = {}  # pid -> its own largest RSS seen
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop sampling and take one last sample."""
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        """Sample every interval until stopped."""
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        """Add one sample of the tree's total RSS."""
        total = 0
        for pid in tree(self.root):
            rss = rss_bytes(pid)
            total += rss
            if rss > self.largest.get(pid, 0):
                self.largest[pid] = rss
        self.samples += 1
        self.peak = max(self.peak, total)

    @property
    def peak_mb(self) -> float:
        """Return the peak simultaneous RSS of the tree in MiB."""
        return self.peak / MB

    @property
    def largest_child_mb(self) -> float:
        """Return the largest RSS any one descendant (not the root) reached, in MiB."""
        children = [rss for pid, rss in self.largest.items() if pid != self.root]
        return max(children, default=0) / MB

    @property
    def root_mb(self) -> float:
        """Return the largest RSS the root process reached while sampled, in MiB."""
        return self.largest.get(self.root, 0) / MB
