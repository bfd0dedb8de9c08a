"""One thread budget for the libraries that compute: Numba's parallel kernels and NumPy's BLAS.

``set_threads(n)`` (the command line's ``-t/--threads``) sets both, and ``OMP_NUM_THREADS`` for libraries that
start later. The BLAS behind Numba's own ``np.dot`` (the quantized prefill tiles) is held to one thread by the
kernels themselves (quant/fast/kernels.py): each Numba thread runs its own tile.
"""

from __future__ import annotations

import os

from .errors import InvalidArgumentError


def set_threads(n: int) -> int:
    """Use ``n`` threads for Numba and BLAS from now on; returns the number Numba could take."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgumentError(f"threads must be a positive integer, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits
    os.environ["OMP_NUM_THREADS"] = str(n)
    taken = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(taken)
    threadpool_limits(limits=n, user_api="blas")
    return taken
