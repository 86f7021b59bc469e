from ckptscan.cli import main

raise SystemExit(main())
