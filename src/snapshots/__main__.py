from snapshots.cli import main

main()
