"""`python -m sw.eval`: mAP and fidelity of bundles on labelled images (`sw.eval.evaluate`)."""

from sw.eval.evaluate import main

raise SystemExit(main())
