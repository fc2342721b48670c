"""Plot choices a reader relies on (ui/charts.py)."""

from ui.charts import fold_metrics


def test_the_per_fold_plot_shows_categories_as_points_on_an_honest_axis():
    folds = [{"fold": k, "accuracy": a, "roc_auc": 0.97, "sensitivity": 0.9, "specificity": 0.95}
             for k, a in enumerate([0.984, 0.874, 0.944, 0.917, 0.942])]
    figure = fold_metrics(folds)
    assert {trace.mode for trace in figure.data} == {"markers"}  # no line joins categorical folds
    low, high = figure.layout.yaxis.range
    assert low <= 0.5 and high >= 1.0  # 0.87 to 0.98 must not fill the whole height
    assert "axis from 0.5" in figure.layout.yaxis.title.text
