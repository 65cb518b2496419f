package install

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// kinded is what every object of Objects is: its TypeMeta says its kind.
type kinded interface{ GetObjectKind() schema.ObjectKind }

// UninstallObjects returns what to delete to remove an installation in
// o.Namespace: every object install makes, by kind and name only, in the
// reverse order (the webhook first, so no pod is sent to an injector being
// deleted; the namespace last). cert-manager's Issuer and Certificate are
// listed only with o.CertManager: kubectl fails on kinds the cluster does
// not know, and deleting the namespace removes them anyway.
func UninstallObjects(o Options) ([]any, error) {
	if !o.CertManager && o.TLS == nil {
		o.TLS = &TLS{} // names only: no key material needed
	}
	objs, err := Objects(o)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(objs))
	for i := len(objs) - 1; i >= 0; i-- {
		m, err := meta.Accessor(objs[i])
		if err != nil {
			return nil, err
		}
		apiVersion, kind := objs[i].(kinded).GetObjectKind().GroupVersionKind().ToAPIVersionAndKind()
		out = append(out, &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: apiVersion, Kind: kind},
			ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace()},
		})
	}
	return out, nil
}

// UninstallManifests renders UninstallObjects(o).
func UninstallManifests(o Options) ([]byte, error) {
	objs, err := UninstallObjects(o)
	if err != nil {
		return nil, err
	}
	return Render(objs)
}
