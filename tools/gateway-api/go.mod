// The Gateway API's CRDs (config/crd/standard in the module), installed in the test apiserver
// for the Gateway controller's status tests; nothing is built (tools/gateway-api/crds.sh).
module podnet.io/tools/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.4.1
