"""Process-wide settings that belong to the program, not the library: applied by the `bgvid`
command line at start-up (a library never changes its host process's allocator)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_ARENA_MAX = -8  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 << 20  # blocks from 8 MiB up (a batch of frames or mattes) are mapped and unmapped


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas. Every thread that allocates under contention gets its own arena
    (up to 8 per core), and the pipeline's stage threads allocate frame-sized temporaries, so freed
    blocks pile up across arenas and the peak RSS creeps up over a long run (measured: 849 -> 890 MiB
    over 600 frames of 720p). With 2 arenas the same run peaks at ~784 MiB and stays there; the
    frames themselves are large enough to be mmapped, so speed does not change.

    Also fixes glibc's mmap threshold at 8 MiB. By default it rises to the size of the largest block
    freed (up to 32 MiB), after which batch-sized arrays ([8, 720, 1280] mattes: 29 MiB) come from the
    heap and fragment it: the peak RSS of a 600-frame 720p run then varied from 856 to 1008 MiB
    between identical runs. Fixed at 8 MiB, batch arrays go back to the system when freed
    (benchmarks/memory.py: 789 -> 840 MiB from 60 to 600 frames, same fps within noise); per-frame
    arrays stay below it and keep the heap's speed. False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_ARENA_MAX, int(arenas)))
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and ok
