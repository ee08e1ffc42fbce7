"""``python study/run.py [flags]``: the same command as ``gaze-study`` and ``python -m study``.

A script shim only: the command line lives in ``study.cli`` and the driver in ``study.driver``, so
nothing here is imported twice.
"""

from study.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
