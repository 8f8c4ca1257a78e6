"""`python -m benchmarks NAME [ARGS]`: run the benchmark NAME from the repository root (`python -m
benchmarks` lists them). See benchmarks/harness.py and docs/performance.md."""
import importlib
import pkgutil
import sys
from pathlib import Path

LIBRARIES = {"harness", "model_grid"}  # shared code, not benchmarks


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if not m.name.startswith("_") and m.name not in LIBRARIES)
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        asked_help = sys.argv[1:2] in (["-h"], ["--help"])
        print(f"usage: python -m benchmarks NAME [ARGS]   (NAME --help: its options)\nNAME: {', '.join(names)}",
              file=sys.stdout if asked_help else sys.stderr)
        return 0 if asked_help else 2
    name = sys.argv.pop(1)
    sys.argv[0] = f"python -m benchmarks {name}"
    result = importlib.import_module(f"benchmarks.{name}").main()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
