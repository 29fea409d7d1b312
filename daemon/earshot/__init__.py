"""earshot: a voice-appliance daemon for the OpenAI Realtime API (GA interface)."""

import os as _os

# numpy's BLAS (OpenBLAS) starts a worker thread per core for a matrix product above a small size,
# and its workers spin for a while after each one. Silero's products (every 32 ms while someone
# talks) then kept a second core busy: 18 % of a core for a minute of talk instead of 1 %. Every
# product here is tiny; one thread is always faster. This must run before numpy is first imported,
# which in the daemon happens through this package; an operator's own setting wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")

__version__ = "0.1.0"
