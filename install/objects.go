package install

import (
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/inject"
)

// controlPlaneUID is the user the controller and the injector run as (the
// distroless "nonroot" user), never the proxy's.
const controlPlaneUID = 65532

// socketDir is where the control plane's Workload API socket is mounted.
const socketDir = "/spiffe-workload-api"

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// meta names an object of the installation; component labels it (empty for
// the shared ones). A cluster-scoped object passes its full name.
func (o *Options) meta(name, component string) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: map[string]string{LabelPartOf: "meshproxy"}}
	if component != "" {
		m.Labels["app.kubernetes.io/component"] = component
	}
	return m
}

func (o *Options) clusterMeta(component string) metav1.ObjectMeta {
	m := o.meta(o.ClusterName(component), component)
	m.Namespace = ""
	return m
}

func namespace(o *Options) *corev1.Namespace {
	m := o.meta(o.Namespace, "")
	m.Namespace = ""
	// The control plane is never injected: the injector would wait on
	// itself, and the controller must answer before any proxy can.
	m.Annotations = map[string]string{inject.AnnotationInject: inject.Disabled}
	return &corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: m}
}

// destination returns the controller's ServiceAccount, RBAC, Deployment and
// Service.
func destination(o *Options) []any {
	const component = "destination"
	role := &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: o.clusterMeta(component),
		// Exactly what the controller's informers read.
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "pods", "services"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	args := []string{
		"destination",
		fmt.Sprintf("-addr=:%d", DestinationPort),
		fmt.Sprintf("-admin-addr=:%d", DestinationAdminPort),
		"-cluster-domain=" + o.ClusterDomain,
		"-opaque-ports=" + o.OpaquePorts,
		"-spiffe-socket=unix://" + socketDir + "/" + inject.DefaultSocketFile,
	}
	if o.TrustDomain != "" {
		args = append(args, "-trust-domain="+o.TrustDomain)
	}
	ctr := o.container("destination", args)
	ctr.Ports = []corev1.ContainerPort{
		{Name: "grpc", ContainerPort: DestinationPort, Protocol: corev1.ProtocolTCP},
		{Name: "admin", ContainerPort: DestinationAdminPort, Protocol: corev1.ProtocolTCP},
	}
	ctr.ReadinessProbe = httpProbe("/ready", "admin", corev1.URISchemeHTTP)
	ctr.LivenessProbe = httpProbe("/live", "admin", corev1.URISchemeHTTP)
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "spiffe-workload-api", MountPath: socketDir, ReadOnly: true}}
	dep := o.deployment(DestinationName, component, ctr, o.socketVolume())
	return []any{
		o.serviceAccount(DestinationName, component),
		role,
		o.binding(component, role.Name, DestinationName),
		dep,
		o.service(DestinationName, component, corev1.ServicePort{
			Name: "grpc", Port: DestinationPort, TargetPort: intstr.FromString("grpc"), Protocol: corev1.ProtocolTCP,
		}),
	}
}

// injector returns the webhook's ServiceAccount, RBAC, Deployment and
// Service.
func injector(o *Options) []any {
	const component = "injector"
	role := &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: o.clusterMeta(component),
		// Namespace annotations enable injection and configure it.
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}},
	}
	args := []string{
		"injector",
		fmt.Sprintf("-addr=:%d", InjectorPort),
		"-tls-cert=/tls/tls.crt",
		"-tls-key=/tls/tls.key",
		"-image=" + o.ProxyImage,
		"-image-pull-policy=" + string(o.ImagePullPolicy),
		"-destination-addr=" + o.DestinationAddr(),
		// The proxies must meet this controller, and no other workload.
		"-destination-identity=spiffe://" + o.TrustDomain + "/ns/" + o.Namespace + "/sa/" + DestinationName,
		"-socket=" + string(o.Socket),
	}
	if o.Socket == inject.SocketHostPath {
		args = append(args, "-host-socket-dir="+o.HostSocketDir)
	} else {
		args = append(args, "-csi-driver="+o.CSIDriver)
	}
	for _, r := range []struct {
		flag string
		list corev1.ResourceList
		name corev1.ResourceName
	}{
		{"proxy-cpu-request", o.ProxyResources.Requests, corev1.ResourceCPU},
		{"proxy-memory-request", o.ProxyResources.Requests, corev1.ResourceMemory},
		{"proxy-memory-limit", o.ProxyResources.Limits, corev1.ResourceMemory},
	} {
		v := ""
		if q, ok := r.list[r.name]; ok {
			v = q.String()
		}
		args = append(args, "-"+r.flag+"="+v)
	}
	ctr := o.container("injector", args)
	ctr.Ports = []corev1.ContainerPort{{Name: "https", ContainerPort: InjectorPort, Protocol: corev1.ProtocolTCP}}
	ctr.ReadinessProbe = httpProbe("/live", "https", corev1.URISchemeHTTPS)
	ctr.LivenessProbe = httpProbe("/live", "https", corev1.URISchemeHTTPS)
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}}
	dep := o.deployment(InjectorName, component, ctr, corev1.Volume{
		Name:         "tls",
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: TLSSecretName}},
	})
	return []any{
		o.serviceAccount(InjectorName, component),
		role,
		o.binding(component, role.Name, InjectorName),
		dep,
		o.service(InjectorName, component, corev1.ServicePort{
			Name: "https", Port: 443, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP,
		}),
	}
}

func (o *Options) serviceAccount(name, component string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: o.meta(name, component)}
}

func (o *Options) binding(component, role, serviceAccount string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
		ObjectMeta: o.clusterMeta(component),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: o.Namespace}},
	}
}

func (o *Options) service(name, component string, port corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: o.meta(name, component),
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{port},
		},
	}
}

func (o *Options) container(name string, args []string) corev1.Container {
	return corev1.Container{
		Name:            name,
		Image:           o.Image,
		ImagePullPolicy: o.ImagePullPolicy,
		Args:            args,
		Resources:       o.Resources,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             new(true),
			RunAsUser:                new(int64(controlPlaneUID)),
			AllowPrivilegeEscalation: new(false),
			ReadOnlyRootFilesystem:   new(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func (o *Options) deployment(name, component string, ctr corev1.Container, volumes ...corev1.Volume) *appsv1.Deployment {
	labels := map[string]string{"app": name, LabelPartOf: "meshproxy", "app.kubernetes.io/component": component}
	return &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: o.meta(name, component),
		Spec: appsv1.DeploymentSpec{
			Replicas: new(o.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      labels,
					Annotations: map[string]string{inject.AnnotationInject: inject.Disabled},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					Containers:         []corev1.Container{ctr},
					Volumes:            volumes,
				},
			},
		},
	}
}

func (o *Options) socketVolume() corev1.Volume {
	v := corev1.Volume{Name: "spiffe-workload-api"}
	if o.Socket == inject.SocketHostPath {
		dir := corev1.HostPathDirectory
		v.HostPath = &corev1.HostPathVolumeSource{Path: o.HostSocketDir, Type: &dir}
	} else {
		v.CSI = &corev1.CSIVolumeSource{Driver: o.CSIDriver, ReadOnly: new(true)}
	}
	return v
}

func httpProbe(path, port string, scheme corev1.URIScheme) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(port), Scheme: scheme,
		}},
		PeriodSeconds:    10,
		FailureThreshold: 3,
	}
}

// webhook is the MutatingWebhookConfiguration; its caBundle is the TLS CA,
// or left to cert-manager's CA injector.
func webhook(o *Options) *admissionregistrationv1.MutatingWebhookConfiguration {
	m := o.clusterMeta("injector")
	var caBundle []byte
	if o.CertManager {
		m.Annotations = map[string]string{CAInjectorAnnotation: o.Namespace + "/" + CertificateName}
	} else {
		caBundle = o.TLS.CAPEM
	}
	fail := admissionregistrationv1.Ignore
	side := admissionregistrationv1.SideEffectClassNone
	reinvoke := admissionregistrationv1.IfNeededReinvocationPolicy
	scope := admissionregistrationv1.NamespacedScope
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   typeMeta("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
		ObjectMeta: m,
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    WebhookName,
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &side,
			// Never block pod creation on the injector: a pod admitted
			// while it is down runs without a proxy, and the injector logs
			// and counts errors.
			FailurePolicy:      &fail,
			ReinvocationPolicy: &reinvoke,
			TimeoutSeconds:     new(int32(5)),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{
					Name: InjectorName, Namespace: o.Namespace, Path: new("/inject"), Port: new(int32(443)),
				},
				CABundle: caBundle,
			},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn,
				Values: []string{"kube-system", o.Namespace},
			}}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &scope,
				},
			}},
		}},
	}
}
