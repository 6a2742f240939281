from spacelang.cli import main

main()
