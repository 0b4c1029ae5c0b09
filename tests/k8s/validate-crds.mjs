// Validates Prometheus Operator objects (ServiceMonitor, PrometheusRule, AlertmanagerConfig) against the operator's
// own schemas (npm @kubernetes-models/prometheus-operator). Reads a JSON array of objects on
// stdin; prints one line per object; exits 1 if any is invalid. Used by tests/helm.rs.
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { AlertmanagerConfig } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1alpha1/AlertmanagerConfig";

const kinds = {
  "monitoring.coreos.com/v1": { ServiceMonitor, PrometheusRule },
  "monitoring.coreos.com/v1alpha1": { AlertmanagerConfig },
};
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = false;
for (const object of JSON.parse(input)) {
  const Model = kinds[object.apiVersion]?.[object.kind];
  const name = `${object.kind}/${object.metadata?.name}`;
  if (!Model) {
    console.log(`unknown: ${name} (${object.apiVersion})`);
    failed = true;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`valid: ${name}`);
  } catch (e) {
    console.log(`invalid: ${name}: ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
