//! Least privilege, checked: every AWS operation the code calls (found by reading the sources of
//! the three AWS clients) is granted by `aws/iam-policy.json`, and the policy grants nothing the
//! code (or Athena on its behalf) does not use.

use std::collections::BTreeSet;

/// The IAM action(s) an SDK operation needs (S3's do not all follow the operation's name).
fn actions(service: &str, op: &str) -> Vec<String> {
    let pascal: String = op.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
    let s3 = |a: &[&str]| a.iter().map(|a| format!("s3:{a}")).collect();
    match (service, op) {
        ("s3", "list_objects_v2" | "head_bucket") => s3(&["ListBucket"]),
        ("s3", "head_object" | "get_object") => s3(&["GetObject"]),
        ("s3", "create_multipart_upload" | "upload_part" | "complete_multipart_upload" | "put_object") => s3(&["PutObject"]),
        ("s3", "copy_object") => s3(&["GetObject", "PutObject"]),
        _ => vec![format!("{service}:{}", pascal.replace("V2", ""))],
    }
}

/// Operations called on an SDK client in `file` (`client.put_object()`, across line breaks).
fn operations(file: &str) -> BTreeSet<String> {
    let text: String = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + file).unwrap().split_whitespace().collect();
    text.split("client.")
        .skip(1)
        .filter_map(|rest| rest.split_once("()").map(|(op, _)| op.to_owned()))
        .filter(|op| op.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .collect()
}

fn policy() -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(include_str!("../aws/iam-policy.json")).unwrap();
    v["Statement"].as_array().unwrap().iter().flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned())).collect()
}

#[test]
fn the_policy_grants_exactly_what_the_code_calls() {
    let mut used = BTreeSet::new();
    for (service, file) in [("s3", "src/lake/s3.rs"), ("glue", "src/catalog/glue.rs"), ("athena", "src/query/athena.rs")] {
        let ops = operations(file);
        assert!(ops.len() >= 4, "found the {service} calls in {file}: {ops:?}");
        for op in ops {
            used.extend(actions(service, &op));
        }
    }
    let granted = policy();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "aws/iam-policy.json does not grant {missing:?}, which the code calls");
    // What Athena needs on the caller's behalf, beyond the calls tickerlake makes itself.
    let athena_itself: BTreeSet<String> = ["s3:GetBucketLocation"].into_iter().map(str::to_owned).collect();
    let unused: Vec<_> = granted.iter().filter(|a| !used.contains(*a) && !athena_itself.contains(*a)).collect();
    assert!(unused.is_empty(), "aws/iam-policy.json grants {unused:?}, which nothing calls");
}

#[test]
fn the_scan_finds_calls_split_across_lines() {
    let ops = operations("src/query/athena.rs");
    assert!(ops.contains("start_query_execution") && ops.contains("get_query_results"), "{ops:?}");
    assert_eq!(actions("s3", "copy_object"), ["s3:GetObject", "s3:PutObject"]);
}
