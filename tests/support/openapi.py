"""The API's documented operations, as the OpenAPI tests expect them."""

# Every operation of DESIGN §4 with every answer it documents.
DOCUMENTED_ANSWERS = {
    ("post", "/api/v1/auth/token/"): {"200", "400", "429"},
    ("get", "/api/v1/roadmaps/"): {"200", "401", "404"},
    ("post", "/api/v1/roadmaps/"): {"201", "400", "401", "413", "429"},
    ("get", "/api/v1/roadmaps/{roadmap_id}/"): {"200", "401", "404"},
    ("delete", "/api/v1/roadmaps/{roadmap_id}/"): {"204", "401", "404", "409"},
    ("get", "/api/v1/roadmaps/{roadmap_id}/concepts/{concept_id}/{content_type}/"): {
        "200",
        "401",
        "404",
    },
    ("get", "/api/v1/roadmaps/{roadmap_id}/concepts/{concept_id}/tutorial/v{version}.md/"): {
        "200",
        "401",
        "404",
    },
    ("get", "/api/v1/roadmaps/{roadmap_id}/concepts/{concept_id}/{content_type}/draft/"): {
        "200",
        "401",
        "404",
    },
    ("post", "/api/v1/roadmaps/{roadmap_id}/concepts/{concept_id}/{content_type}/retry/"): {
        "202",
        "400",
        "401",
        "404",
        "409",
        "429",
    },
    ("post", "/api/v1/roadmaps/{roadmap_id}/concepts/retry-batch/"): {
        "200",
        "202",
        "400",
        "401",
        "404",
        "429",
    },
    ("post", "/api/v1/roadmaps/{roadmap_id}/generate/"): {"200", "202", "401", "404", "429"},
    ("get", "/api/v1/tasks/{task_id}/"): {"200", "400", "401", "404"},
    ("post", "/api/v1/tasks/{task_id}/cancel/"): {"202", "401", "404", "409", "429"},
    ("get", "/api/v1/usage/"): {"200", "400", "401", "404"},
}
