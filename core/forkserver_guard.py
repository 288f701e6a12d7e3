"""Imported by the job workers' fork server alone (:data:`core.workers.PRELOAD`): the kernel SIGKILLs the fork
server the moment the app that started it exits, and with it, by the same signal, every worker it forked.

Without it the server notices the app's end itself and then finalises a Python interpreter full of codec
libraries, while a worker that outlived the app by those milliseconds could still finish an instance its
dead runner never records.
"""

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1

if sys.platform.startswith("linux") and sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
