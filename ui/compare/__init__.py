"""The Compare tab: its layout (tab), handlers, what panes show (view) and the leaderboard (board)."""
