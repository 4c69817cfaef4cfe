"""`mirrorTo.record: true` on a mirror to a Service: the copies go through a recorder (a
Deployment running the picker image's `infershift.picker.recorder`, and its Service) that logs
each answer; the RequestMirror names the recorder, which forwards to the mirrored Service. The
recorder itself runs for real in tests/picker/test_picker_recorder.py (behind a mirroring Envoy)."""
from __future__ import annotations

import copy

import pytest
import yaml
from k8s_schemas import validate

from infershift import spec
from infershift.components.render import render_values
from infershift.spec import config_values


def _ack_mirror(**mirror_to) -> dict:
    values = copy.deepcopy(config_values(yaml.safe_load(spec.stack_path("ack-mirror").read_text())))
    values["mirrors"]["mirror-route"]["mirrorTo"].update(mirror_to)
    return values


def test_a_recorded_mirror_sends_its_copies_through_the_recorder():
    r = render_values(_ack_mirror(record=True))
    objs = {(o["kind"], o["metadata"]["name"]): o for o in r.objects}
    dep = objs[("Deployment", "vllm-llama2-7b-pool-1-recorder")]
    svc = objs[("Service", "vllm-llama2-7b-pool-1-recorder")]
    assert validate(dep) == [] and validate(svc) == []
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "infershift.picker.recorder"]
    assert c["args"][:4] == ["--upstream", "http://vllm-llama2-7b-pool-1.default.svc:8000", "--name",
                             "vllm-llama2-7b-pool-1"]
    # the picker image the stack builds: the pickers' own
    epp = next(o for (kind, name), o in objs.items() if kind == "Deployment" and name.endswith("-epp"))
    assert c["image"] == epp["spec"]["template"]["spec"]["containers"][0]["image"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    route = objs[("HTTPRoute", "mirror-route")]
    [rule] = route["spec"]["rules"]
    mirror = next(f for f in rule["filters"] if f["type"] == "RequestMirror")["requestMirror"]
    assert mirror["backendRef"] == {"group": "", "kind": "Service", "name": "vllm-llama2-7b-pool-1-recorder",
                                    "port": 8000}
    # without record: straight to the Service, no recorder
    plain = render_values(_ack_mirror())
    assert not [o for o in plain.objects if o["metadata"]["name"].endswith("-recorder")]


@pytest.mark.parametrize("change, expected", [
    ({"record": True, "kind": "InferencePool", "name": "vllm-llama2-7b-pool"},
     "infershift:mirrors.mirror-route.mirrorTo.record: a pool's picker records its answers itself"),
])
def test_record_errors_name_the_path(change, expected):
    with pytest.raises(spec.StackConfigError) as info:
        spec.validate(_ack_mirror(**change))
    assert any(str(p).startswith(expected) for p in info.value.problems), info.value.problems
