package inject

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Workload is a decoded object that runs pods, with its pod template found.
type Workload struct {
	// Object is the typed object (*appsv1.Deployment, *corev1.Pod, …),
	// changed in place through the pointers below.
	Object any
	// Meta is the workload's own metadata (the pod's, for a Pod).
	Meta *metav1.ObjectMeta
	// PodMeta and Spec are the pod template's.
	PodMeta *metav1.ObjectMeta
	Spec    *corev1.PodSpec
}

// NewWorkload returns an empty object of the workload kind gvk
// ("apps/v1/Deployment") with accessors to its pod template, or false when
// the kind runs no pods.
func NewWorkload(gvk string) (Workload, bool) {
	switch gvk {
	case "v1/Pod":
		o := &corev1.Pod{}
		return Workload{o, &o.ObjectMeta, &o.ObjectMeta, &o.Spec}, true
	case "v1/ReplicationController":
		o := &corev1.ReplicationController{Spec: corev1.ReplicationControllerSpec{Template: &corev1.PodTemplateSpec{}}}
		return Workload{o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec}, true
	case "apps/v1/Deployment":
		o := &appsv1.Deployment{}
		return Workload{o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec}, true
	case "apps/v1/StatefulSet":
		o := &appsv1.StatefulSet{}
		return Workload{o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec}, true
	case "apps/v1/DaemonSet":
		o := &appsv1.DaemonSet{}
		return Workload{o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec}, true
	case "apps/v1/ReplicaSet":
		o := &appsv1.ReplicaSet{}
		return Workload{o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec}, true
	case "batch/v1/Job":
		o := &batchv1.Job{}
		return Workload{o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec}, true
	case "batch/v1/CronJob":
		o := &batchv1.CronJob{}
		t := &o.Spec.JobTemplate.Spec.Template
		return Workload{o, &o.ObjectMeta, &t.ObjectMeta, &t.Spec}, true
	}
	return Workload{}, false
}

// Scope returns the annotation layers of the workload's pods given its
// namespace's annotations.
func (w Workload) Scope(namespace map[string]string) Scope {
	s := Scope{Pod: w.PodMeta.Annotations, Namespace: namespace}
	if w.Meta != w.PodMeta {
		s.Workload = w.Meta.Annotations
	}
	return s
}
