// The ACK base-model canary (stacks/Pulumi.ack-canary.yaml) in TypeScript, from infershift's
// component package: two model servers, one InferencePool each, an Envoy Gateway and an
// HTTPRoute splitting stableWeight/canaryWeight between the pools.
//
//   pulumi package add ../../infershift/components/package   # generates sdks/infershift (@pulumi/infershift)
//   npm install && pulumi up
//
// tests/components/test_components_ts_example.py runs this file under node with stand-ins for the
// SDKs and checks every argument it passes against the package's schema.
import * as pulumi from "@pulumi/pulumi";
import * as alicloud from "@pulumi/alicloud";
import * as k8s from "@pulumi/kubernetes";
import * as infershift from "@pulumi/infershift";

const config = new pulumi.Config();
const clusterId = config.get("ackClusterId") || "c0123456789abcdef0123456789abcdef";
const region = config.get("ackRegion") || "cn-hangzhou";
const registry = config.get("registry") || "registry.cn-hangzhou.aliyuncs.com/my-team";
const canaryWeight = config.getNumber("canaryWeight") ?? 10;

const cloud = new alicloud.Provider("alicloud", { region: region });
const credential = alicloud.cs.getClusterCredentialOutput({ clusterId: clusterId }, { provider: cloud });
const cluster = new k8s.Provider("k8s", { kubeconfig: credential.kubeConfig });
const onCluster = { providers: [cluster] };

const gpus = new infershift.GpuNodePool("gpu-a10", {
    platform: "ack", cluster: clusterId, gpuType: "nvidia-a10", gpusPerNode: 1, minNodes: 2, maxNodes: 2,
    instanceTypes: ["ecs.gn7i-c8g1.2xlarge"], vswitchIds: ["vsw-0123456789abcdef0"],
}, { providers: [cloud] });

const images = new infershift.Images("images", { registry: registry, images: ["picker"], tag: "0.1.0" });
const pickerImage = images.refs.apply(refs => refs["picker"]);

const server = {
    replicas: 1, gpus: 1, maxModelLen: 8192, gpuMemoryUtilization: 0.95, enforceEager: true, trustRemoteCode: true,
    servedModelName: "mymodel", nodeSelector: gpus.nodeSelector,
};
const qwen = new infershift.InferenceService("qwen", {
    ...server,
    model: "/models/Qwen-2.5-7B-Instruct",
    image: "registry-cn-hangzhou.ack.aliyuncs.com/dev/qwen-2.5-7b-instruct-lora:v0.1",
    loraModules: { "travel-helper-v1": "/models/Qwen-TravelHelper-Lora",
                   "travel-helper-v2": "/models/Qwen-TravelHelper-Lora-v2" },
    maxLoras: 2, maxCpuLoras: 4,
    labels: { app: "custom-serving", release: "qwen" },
}, { ...onCluster, dependsOn: [gpus] });
const deepseek = new infershift.InferenceService("deepseek-r1", {
    ...server,
    model: "/models/DeepSeek-R1-Distill-Qwen-7B",
    image: "registry-cn-hangzhou.ack.aliyuncs.com/dev/ds-r1-qwen-7b-without-lora:v0.1",
    labels: { app: "custom-serving", release: "deepseek-r1" },
}, { ...onCluster, dependsOn: [gpus] });

const gatewayPeers = [{ namespaceSelector: {}, podSelector: { matchLabels: {
    "gateway.envoyproxy.io/owning-gateway-name": "inference-gateway",
    "gateway.envoyproxy.io/owning-gateway-namespace": "default",
} } }];
const pools = [
    new infershift.InferencePool("mymodel-pool-v1", {
        apiVersion: "v1alpha2", selector: qwen.labels, targetPorts: [8000], pickerImage: pickerImage, gatewayPeers: gatewayPeers,
        servedModels: ["mymodel", "travel-helper-v1", "travel-helper-v2"],
        models: {
            mymodel: { criticality: "Critical", targets: { mymodel: 100 } },
            travelhelper: { criticality: "Critical", targets: { "travel-helper-v1": 90, "travel-helper-v2": 10 } },
        },
    }, onCluster),
    new infershift.InferencePool("mymodel-pool-v2", {
        apiVersion: "v1alpha2", selector: deepseek.labels, targetPorts: [8000], pickerImage: pickerImage, gatewayPeers: gatewayPeers,
        servedModels: ["mymodel"],
        models: { mymodel: { criticality: "Critical", targets: { mymodel: 100 } } },
    }, onCluster),
];

const gateway = new infershift.Gateway("inference-gateway", {
    className: "inference-gateway", createClass: true, listeners: [{ name: "llm-gw", port: 8080 }],
    bufferLimit: "20Mi", requestTimeout: "24h", serviceType: "LoadBalancer",
}, onCluster);

const route = new infershift.CanaryRoute("inference-route", {
    gateway: gateway.gatewayName, listener: "llm-gw", paths: ["/"], poolApiVersion: "v1alpha2",
    backends: { "mymodel-pool-v1": 100 - canaryWeight, "mymodel-pool-v2": canaryWeight },
}, { ...onCluster, dependsOn: pools });

export const gatewayAddress = gateway.address;
export const routeName = route.routeName;
export const poolNames = pools.map(p => p.poolName);
