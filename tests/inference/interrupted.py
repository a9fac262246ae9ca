"""A training run in another process, stopped by a signal once it has checkpointed: what
every kill-and-resume test does before comparing the resumed run with an uninterrupted one."""

import signal
import subprocess
import sys
import time


def stop_after_checkpoint(script, path, how, settle=0.3, timeout=120):
    """Run ``python -c script path`` until it has written ``path``, let it go on for
    ``settle`` seconds, then SIGKILL it (``how="kill"``) or press Ctrl-C (``"interrupt"``);
    returns its standard error once it has exited."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.05)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    proc.wait(timeout=60)
    return proc.stderr.read()
