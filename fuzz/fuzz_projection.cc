// libFuzzer target: what the projection decodes from the API server and the operator — list and
// watch answers, KubeVirt objects (and the merge patch planned from them), kubeconfigs (the
// YAML subset and JSON) — and what the controller's webhooks decode: AdmissionReviews, run
// through every rule and the VM mutator, answered with valid JSON. Arbitrary bytes must give a
// value or an error, never a crash; a planned patch is valid JSON naming each added resource
// exactly once and no removed one that says externalResourceProvider: true.
#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "controller/admission.h"
#include "controller/validate.h"
#include "controller/vm_mutation.h"
#include "dra/claim.h"
#include "projection/kubeconfig.h"
#include "projection/kubevirt.h"
#include "projection/objects.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)pcid::projection::DecodeList(text);
  (void)pcid::projection::DecodeWatchEvent(text);
  (void)pcid::projection::ParseKubeconfig(text, "fuzz");
  // A ResourceClaim as the DRA driver reads it: every accepted device names the driver asked for
  // and a base request (no subrequest).
  if (auto claim = pcid::dra::DecodeAllocatedClaim(text, "pcidevices.io"); claim.ok()) {
    for (const auto& d : claim->devices) {
      if (d.request.find('/') != std::string::npos) std::abort();
    }
  }
  if (auto review = pcid::controller::DecodeAdmissionReview(text); review.ok()) {
    pcid::controller::ClusterStores cluster;
    for (auto& [store, resource] : cluster.Watched()) store->Replace({"1", {}, {}});
    const auto verdict = pcid::controller::Validate(*review, cluster, {"system:serviceaccount:x:"});
    const auto mutation = pcid::controller::PlanVmMutation(*review, cluster);
    simdjson::dom::parser parser;
    simdjson::dom::element answer;
    if (parser.parse(pcid::controller::EncodeAdmissionReview(review->uid, verdict)).get(answer) ||
        parser.parse(pcid::controller::EncodeAdmissionReview(review->uid, mutation.verdict))
            .get(answer)) {
      std::abort();
    }
  }
  auto patch = pcid::projection::PlanPermittedHostDevices(text, {{"10de:1c03", "nvidia.com/GP106"}},
                                                          {"nvidia.com/OLD"});
  if (patch.ok() && patch->has_value()) {
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    simdjson::dom::array list;
    if (parser.parse(**patch).get(root) ||
        root["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"].get(list)) {
      std::abort();
    }
    int mine = 0;
    for (simdjson::dom::element e : list) {
      std::string_view name;
      if (!e["resourceName"].get(name) && name == "nvidia.com/GP106") ++mine;
      // Removed ones go, unless they are not ours (an administrator's, not external).
      bool external = false;
      if (!e["resourceName"].get(name) && name == "nvidia.com/OLD" &&
          !e["externalResourceProvider"].get(external) && external) {
        std::abort();
      }
    }
    if (mine != 1) std::abort();
  }
  return 0;
}
