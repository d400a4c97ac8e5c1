from ecnn.cli import main

raise SystemExit(main())
