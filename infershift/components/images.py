"""Images: the picker's and the simulator's container images, built from the package's own
Dockerfiles and pushed to the stack's registry (pulumi-docker-build, BuildKit), so Deployments run
exactly this checkout's code, by digest.

The build context is the directory that holds the `infershift` package (the repository, or
site-packages when installed); each Dockerfile's `.dockerignore` sends only the modules it copies.
"""
from pathlib import Path
from typing import NotRequired, TypedDict

import pulumi

from .checks import check
from .enums import component_args
from .objects import keep_options

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"picker": "infershift/picker/Dockerfile", "sim": "infershift/sim/Dockerfile"}


class RegistryLoginArgs(TypedDict):
    address: pulumi.Input[str]
    username: pulumi.Input[str]
    password: pulumi.Input[str]
    """A secret (`pulumi config set --secret`, or another resource's secret output)."""


class ImagesArgs(TypedDict):
    registry: pulumi.Input[str]
    """Repository prefix, e.g. `registry.cn-hangzhou.aliyuncs.com/team` (ACR) or
    `us-docker.pkg.dev/project/repo` (Artifact Registry)."""
    images: list[str]
    """Which to build: `picker`, `sim`."""
    tag: str
    platforms: NotRequired[list[str]]
    """Target platforms, default `linux/amd64` (the clouds' GPU nodes)."""
    login: NotRequired[RegistryLoginArgs]
    """Credentials for the push; none: the builder's own (docker login)."""
    context: NotRequired[str]


def image_name(registry: str, image: str) -> str:
    return f"{registry.rstrip('/')}/infershift-{image}"


def image_tag(registry: pulumi.Input[str], image: str, tag: str) -> pulumi.Input[str]:
    """`<registry>/infershift-<image>:<tag>`; an Output when the registry is one (another resource's URL)."""
    if isinstance(registry, pulumi.Output):
        return registry.apply(lambda r: f"{image_name(r, image)}:{tag}")
    return f"{image_name(registry, image)}:{tag}"  # type: ignore[arg-type]


class Images(pulumi.ComponentResource):
    """`refs[image]` is the pushed image's `tag@sha256:digest`, what the Deployments reference."""

    refs: dict[str, pulumi.Output[str]]
    """Image (`picker`, `sim`) -> the pushed image's `tag@sha256:digest`."""

    def __init__(self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, ImagesArgs)
        check("Images", name, args)  # before anything is declared
        super().__init__("infershift:index:Images", name, None, opts)
        keep_options(self, opts)
        import pulumi_docker_build as docker_build

        context = args.get("context") or str(PACKAGE_ROOT)
        login = args.get("login")
        self.refs = {}
        for image in args["images"]:
            built = docker_build.Image(  # type: ignore[call-overload]
                f"{name}-{image}",
                tags=[image_tag(args["registry"], image, args["tag"])],
                context={"location": context},
                dockerfile={"location": str(Path(context) / DOCKERFILES[image])},
                platforms=args.get("platforms") or ["linux/amd64"],
                push=True,
                registries=[login] if login else None,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.refs[image] = built.ref
        self.register_outputs({"refs": self.refs})
