package check

import (
	"context"
	"errors"
	"fmt"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/install"
)

func checkAPI(_ context.Context, c *cluster) ([]string, error) {
	_, err := c.client.Discovery().ServerVersion()
	return nil, err
}

// access is one permission the checks use.
type access struct {
	verb, group, resource, namespace string
}

func checkRBAC(ctx context.Context, c *cluster) ([]string, error) {
	ns := c.o.Namespace
	var faults []string
	for _, a := range []access{
		{"list", "", "namespaces", ""},
		{"list", "", "pods", ""},
		{"list", "", "services", ""},
		{"list", "networking.k8s.io", "networkpolicies", ""},
		{"list", "apps", "daemonsets", ""},
		{"get", "storage.k8s.io", "csidrivers", ""},
		{"get", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ""},
		{"get", "rbac.authorization.k8s.io", "clusterroles", ""},
		{"get", "rbac.authorization.k8s.io", "clusterrolebindings", ""},
		{"get", "apps", "deployments", ns},
		{"get", "", "services", ns},
		{"get", "", "serviceaccounts", ns},
		{"get", "", "configmaps", ns},
		{"get", "", "secrets", ns},
	} {
		review, err := c.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: a.resource, Namespace: a.namespace,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return faults, fmt.Errorf("access review: %w", err)
		}
		if !review.Status.Allowed {
			what := a.resource
			if a.group != "" {
				what += "." + a.group
			}
			where := "in all namespaces"
			if a.namespace != "" {
				where = "in namespace " + a.namespace
			}
			faults = append(faults, fmt.Sprintf("cannot %s %s %s", a.verb, what, where))
		}
	}
	return faults, nil
}

// installOptions are the options the installation was made with, as far as
// the names of its objects go.
func (c *cluster) installOptions(ctx context.Context) install.Options {
	o := install.DefaultOptions()
	o.Namespace = c.o.Namespace
	o.CertManager = c.setting(ctx, install.ConfigCertManager, "false") == "true"
	return o
}

func checkObjects(ctx context.Context, c *cluster) ([]string, error) {
	objs, err := install.UninstallObjects(c.installOptions(ctx))
	if err != nil {
		return nil, err
	}
	var faults []string
	for _, obj := range objs {
		m := obj.(*metav1.PartialObjectMetadata)
		err := c.get(ctx, m.Kind, m.Namespace, m.Name)
		if apierrors.IsNotFound(err) {
			name := m.Name
			if m.Namespace != "" {
				name = m.Namespace + "/" + name
			}
			faults = append(faults, fmt.Sprintf("%s %s not found", m.Kind, name))
		} else if err != nil {
			return faults, err
		}
	}
	return faults, nil
}

// get reads an object of the installation by kind and name.
func (c *cluster) get(ctx context.Context, kind, namespace, name string) error {
	var err error
	get := metav1.GetOptions{}
	switch kind {
	case "Namespace":
		_, err = c.client.CoreV1().Namespaces().Get(ctx, name, get)
	case "ConfigMap":
		_, err = c.client.CoreV1().ConfigMaps(namespace).Get(ctx, name, get)
	case "Secret":
		_, err = c.client.CoreV1().Secrets(namespace).Get(ctx, name, get)
	case "ServiceAccount":
		_, err = c.client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, get)
	case "Service":
		_, err = c.client.CoreV1().Services(namespace).Get(ctx, name, get)
	case "Deployment":
		_, err = c.client.AppsV1().Deployments(namespace).Get(ctx, name, get)
	case "ClusterRole":
		_, err = c.client.RbacV1().ClusterRoles().Get(ctx, name, get)
	case "ClusterRoleBinding":
		_, err = c.client.RbacV1().ClusterRoleBindings().Get(ctx, name, get)
	case "MutatingWebhookConfiguration":
		_, err = c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, get)
	default:
		// cert-manager's kinds (Issuer, Certificate) count as present
		// without a lookup: their CRDs may be missing, and what they make,
		// the injector's Secret, is what webhook-ca checks.
	}
	return err
}

func checkReady(ctx context.Context, c *cluster) ([]string, error) {
	var faults []string
	for _, name := range []string{install.DestinationName, install.InjectorName} {
		d, err := c.client.AppsV1().Deployments(c.o.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			faults = append(faults, fmt.Sprintf("Deployment %s/%s not found", c.o.Namespace, name))
			continue
		}
		if err != nil {
			return faults, err
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.AvailableReplicas < want || want == 0 {
			faults = append(faults, fmt.Sprintf("Deployment %s/%s: %d of %d replicas available", d.Namespace, d.Name, d.Status.AvailableReplicas, want))
		}
	}
	return faults, nil
}

func checkWebhookCA(ctx context.Context, c *cluster) ([]string, error) {
	o := c.installOptions(ctx)
	wh, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, o.ClusterName("injector"), metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("webhook configuration: %w", err)
	}
	var caBundle []byte
	found := false
	for _, w := range wh.Webhooks {
		if w.Name == install.WebhookName {
			caBundle, found = w.ClientConfig.CABundle, true
		}
	}
	if !found {
		return []string{fmt.Sprintf("MutatingWebhookConfiguration %s has no webhook %s", wh.Name, install.WebhookName)}, nil
	}
	secret, err := c.client.CoreV1().Secrets(c.o.Namespace).Get(ctx, install.TLSSecretName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the injector's certificate: %w", err)
	}
	dnsName := o.InjectorDNSNames()[0]
	err = install.VerifyServing(secret.Data["tls.crt"], caBundle, dnsName, time.Now())
	if errors.Is(err, install.ErrCertMismatch) {
		return []string{fmt.Sprintf("Secret %s/%s for %s: %v", c.o.Namespace, install.TLSSecretName, dnsName, err)}, nil
	}
	if err != nil {
		return nil, err
	}
	// Expiring within RenewBefore: the webhook fails open, so after expiry
	// new pods would start unmeshed without an error anywhere.
	if err := install.VerifyServing(secret.Data["tls.crt"], caBundle, dnsName, time.Now().Add(install.RenewBefore)); errors.Is(err, install.ErrCertMismatch) {
		return []string{fmt.Sprintf("Secret %s/%s expires within %v: run meshproxy install again (without -reuse-tls it makes a new one) and apply", c.o.Namespace, install.TLSSecretName, install.RenewBefore)}, nil
	}
	return nil, nil
}
