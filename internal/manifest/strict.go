package manifest

import (
	"bytes"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// NewObject returns an empty typed object of the kind gvk
// ("apps/v1/Deployment") for the kinds meshproxy's manifests use, or false.
func NewObject(gvk string) (any, bool) {
	switch gvk {
	case "v1/Pod":
		return &corev1.Pod{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/ReplicationController":
		return &corev1.ReplicationController{}, true
	case "v1/List":
		return &corev1.List{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "apps/v1/ReplicaSet":
		return &appsv1.ReplicaSet{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "batch/v1/CronJob":
		return &batchv1.CronJob{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}, true
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, true
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}, true
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}, true
	case "storage.k8s.io/v1/CSIDriver":
		return &storagev1.CSIDriver{}, true
	case "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration":
		return &admissionregistrationv1.MutatingWebhookConfiguration{}, true
	}
	return nil, false
}

// CheckStrict decodes every document of a stream, and every item of its
// Lists, strictly into its k8s.io/api type: what a tool's output and the
// project's examples must pass. A kind NewObject does not know is an error,
// so nothing goes unchecked by accident.
func CheckStrict(stream []byte) error {
	docs, err := Read(bytes.NewReader(stream))
	if err != nil {
		return err
	}
	for i, d := range docs {
		h, err := ReadHeader(d.Body)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if h.Kind == "" {
			continue
		}
		if err := checkObject(d.Body, h); err != nil {
			return fmt.Errorf("document %d (%s): %w", i+1, h, err)
		}
	}
	return nil
}

func checkObject(body []byte, h Header) error {
	obj, ok := NewObject(h.GVK())
	if !ok {
		return fmt.Errorf("%w: unknown kind %s", ErrDecode, h.GVK())
	}
	if err := DecodeStrict(body, obj); err != nil {
		return err
	}
	list, ok := obj.(*corev1.List)
	if !ok {
		return nil
	}
	for j, item := range list.Items {
		ih, err := ReadHeader(item.Raw)
		if err != nil {
			return fmt.Errorf("item %d: %w", j+1, err)
		}
		if err := checkObject(item.Raw, ih); err != nil {
			return fmt.Errorf("item %d (%s): %w", j+1, ih, err)
		}
	}
	return nil
}
