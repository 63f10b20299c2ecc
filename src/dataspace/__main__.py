from dataspace.cli.main import main

main()
