"""``python -m jumper_proxy`` runs the command line."""

from jumper_proxy.cli import main

if __name__ == "__main__":
    main()
