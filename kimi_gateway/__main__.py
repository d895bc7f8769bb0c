from kimi_gateway.cli import main

raise SystemExit(main())
