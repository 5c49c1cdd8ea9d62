"""``swallow-trt deploy k8s``: the Kubernetes objects of a Swallow deployment, built as data and written
as YAML for ``kubectl apply -k``. ``signals`` holds every metric query the objects scale and route on."""
