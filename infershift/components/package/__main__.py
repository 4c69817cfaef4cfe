"""The component provider: Pulumi's python language host runs this folder (PulumiPlugin.yaml)."""
import sys
from pathlib import Path

try:
    import infershift  # noqa: F401
except ImportError:  # run from a checkout without infershift installed: the repository's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pulumi.provider.experimental import component_provider_host

from infershift.components.package import NAME, VERSION, components, schema_text


def main() -> None:
    if sys.argv[1:] == ["schema"]:  # `python -m infershift.components.package schema`: print the schema
        print(schema_text(), end="")
        return
    component_provider_host(components(), NAME, version=VERSION)


if __name__ == "__main__":
    main()
