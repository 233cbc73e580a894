"""`python -m nashcli` runs the `nash` command group (also under torchrun)."""

from nashcli.cli.app import main

if __name__ == "__main__":
    main()
