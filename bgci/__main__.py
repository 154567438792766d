"""`python3 -m bgci`: the same as the `bgci` console script."""

from bgci.console import main

if __name__ == "__main__":
    main()
