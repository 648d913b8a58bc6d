from matrrec_cli.cli import main

main()
