from lcgen.cli import main

main()
