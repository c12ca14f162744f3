from finrtc.cli import main

raise SystemExit(main())
