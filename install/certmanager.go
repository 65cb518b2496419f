package install

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CAInjectorAnnotation has cert-manager's CA injector copy the CA of a
// Certificate ("namespace/name") into the webhook's caBundle.
const CAInjectorAnnotation = "cert-manager.io/inject-ca-from"

// certManagerAPIVersion is the API of cert-manager's Issuer and Certificate.
const certManagerAPIVersion = "cert-manager.io/v1"

// Object is a custom resource of a kind k8s.io/api has no type for
// (cert-manager's), with the fields install sets.
type Object struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              map[string]any `json:"spec,omitempty"`
}

// certManager returns a self-signed Issuer and the injector's Certificate,
// whose Secret has the name the injector mounts.
func certManager(o *Options) []any {
	dns := make([]any, 0, 3)
	for _, n := range o.InjectorDNSNames() {
		dns = append(dns, n)
	}
	return []any{
		&Object{
			TypeMeta:   typeMeta(certManagerAPIVersion, "Issuer"),
			ObjectMeta: o.meta(IssuerName, "injector"),
			Spec:       map[string]any{"selfSigned": map[string]any{}},
		},
		&Object{
			TypeMeta:   typeMeta(certManagerAPIVersion, "Certificate"),
			ObjectMeta: o.meta(CertificateName, "injector"),
			Spec: map[string]any{
				"secretName": TLSSecretName,
				"commonName": o.InjectorDNSNames()[0],
				"dnsNames":   dns,
				"duration":   DefaultCertValidity.String(),
				"privateKey": map[string]any{"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
				"usages":     []any{"server auth", "digital signature"},
				"issuerRef":  map[string]any{"name": IssuerName, "kind": "Issuer"},
			},
		},
	}
}
