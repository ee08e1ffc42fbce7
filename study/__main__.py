"""``python -m study [flags]`` (same as ``gaze-study``)."""

from study.cli import main

raise SystemExit(main())
