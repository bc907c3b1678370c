from higgs_lora.cli import main

raise SystemExit(main())
