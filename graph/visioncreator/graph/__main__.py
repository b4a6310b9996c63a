from visioncreator.graph.cli import main

raise SystemExit(main())
