from gristmill.cli import main

raise SystemExit(main())
