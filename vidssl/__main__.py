from vidssl.cli import main

raise SystemExit(main())
